"""The supernet that starts as the teacher (`block_projection="teacher"`, `teacher_init.py`)."""

import pytest
import torch
from conftest import random_inputs, save_random_teacher
from transformers import AutoModel, BertConfig, BertModel, DistilBertConfig, DistilBertModel

from nasbert_hf.architecture import Architecture
from nasbert_hf.cost import count_params
from nasbert_hf.export import from_supernet
from nasbert_hf.search import Budget, cost_model_for
from nasbert_hf.search_space import SearchSpace, load_search_space, resolve_teacher_sizes
from nasbert_hf.supernet import Supernet
from nasbert_hf.teacher import Teacher, load_teacher
from nasbert_hf.teacher_init import (
    corpus_token_counts,
    frequency_weighted_directions,
    largest_teacher_cut,
    slot_layers,
    start_from_teacher,
    teacher_cut,
    teacher_cut_layers,
    teacher_importance,
    untrained_copy,
)

# The random teacher of conftest: 4 layers of width 32, 4 heads of 8 dims, 64 neurons.
SECTION = {
    "hidden_sizes": ["teacher"],
    "embedding_sizes": [8, 16, "teacher"],
    "ops": ["mha:teacher", "mha:teacher/2", "ffn:teacher", "ffn:teacher/2", "id"],
    "slot_kinds": ["mha", "ffn"],
    "num_slots": 8,
    "num_blocks": 2,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    teacher = load_teacher(save_random_teacher(tmp_path_factory.mktemp("teacher") / "t"))
    space = SearchSpace.from_dict(resolve_teacher_sizes(SECTION, teacher.model.config))
    supernet = Supernet(space, teacher.hidden_size, **teacher.layer_settings(), block_projection="teacher",
                        **teacher.embedding_dimensions())
    input_ids, attention_mask = random_inputs(teacher.vocab_size, batch=4, length=16)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    importance = teacher_importance(teacher, [batch])
    counts = torch.rand(teacher.vocab_size, generator=torch.Generator().manual_seed(0)) ** 4 * 100
    start_from_teacher(supernet, teacher, importance, counts)
    return {"teacher": teacher, "space": space, "supernet": supernet.eval(), "batch": batch,
            "importance": importance, "counts": counts}


TEACHER_ARCH = Architecture(32, ("mha:4x8", "ffn:64") * 4, 32)


def test_teacher_relative_sizes_resolve_from_the_teacher_config(setup):
    space = setup["space"]
    assert space.hidden_sizes == (32,)
    assert space.embedding_sizes == (8, 16, 32)
    assert space.ops == ("mha:4x8", "mha:2x8", "ffn:64", "ffn:32", "id")
    with pytest.raises(ValueError, match="3 heads|do not split"):
        resolve_teacher_sizes({**SECTION, "ops": ["mha:teacher/3"]}, setup["teacher"].model.config)
    with pytest.raises(ValueError, match="teacher/k"):
        resolve_teacher_sizes({**SECTION, "ops": ["conv:teacher"]}, setup["teacher"].model.config)


def test_typed_slots_offer_their_own_kind_and_identity(setup):
    space = setup["space"]
    assert space.slot_choices(32) == [("mha:4x8", "mha:2x8", "id"), ("ffn:64", "ffn:32", "id")] * 2
    assert space.block_size() == 3 ** 4 == len(list(space.enumerate_block()))
    with pytest.raises(ValueError, match="slot 0 op 'ffn:64'"):
        space.validate(Architecture(32, ("ffn:64", "mha:4x8", "id", "id")), block=0)
    with pytest.raises(ValueError, match="not the kind of any op"):
        SearchSpace([32], ["mha:4x8", "id"], 4, 2, slot_kinds=["ffn"])


def test_the_default_preset_is_derived_from_the_default_teacher():
    space = load_search_space("tiny")  # all-MiniLM-L6-v2: width 384, 12 heads of 32 dims, 1536 neurons
    assert space.hidden_sizes == (384,)
    assert {"mha:12x32", "ffn:1536", "id"} <= set(space.ops)
    assert space.embedding_sizes[-1] == 384


def test_the_teacher_sliced_out_of_the_untrained_supernet_is_the_teacher(setup):
    teacher, supernet, batch = setup["teacher"], setup["supernet"], setup["batch"]
    mask = batch["attention_mask"].bool()
    states = teacher.block_states(batch["input_ids"], batch["attention_mask"], 2)
    for block, arch in enumerate(setup["space"].split(TEACHER_ARCH)):
        output = supernet.blocks[block](states[block], mask, arch)
        assert (output - states[block + 1])[mask].abs().max() < 1e-4
    embedding = supernet.embeddings(batch["input_ids"], 32, 32)
    assert (embedding - states[0])[mask].abs().max() < 1e-4


def test_the_exported_teacher_reproduces_the_teachers_automodel(setup, tmp_path):
    teacher, batch = setup["teacher"], setup["batch"]
    model = from_supernet(setup["supernet"], TEACHER_ARCH, teacher)
    model.save_pretrained(tmp_path / "student")
    reloaded = AutoModel.from_pretrained(tmp_path / "student").eval()
    with torch.no_grad():
        ours = reloaded(**batch).last_hidden_state
        theirs = AutoModel.from_pretrained(teacher.name).eval()(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    assert (ours - theirs)[mask].abs().max() < 1e-4
    assert reloaded.config.layers == list(TEACHER_ARCH.layers)
    assert reloaded.embeddings.projection is None  # the teacher's own word table, whole


def test_slices_keep_the_most_important_heads_and_neurons(setup):
    teacher, importance, supernet = setup["teacher"], setup["importance"], setup["supernet"]
    assert slot_layers(supernet, teacher) == [[0, 0, 1, 1], [2, 2, 3, 3]]
    for block, layers in enumerate(slot_layers(supernet, teacher)):
        for slot, index in enumerate(layers):
            layer, ops = teacher.layer(index), supernet.blocks[block].slots[slot].ops
            mha, ffn = ops["mha"], ops["ffn"]
            for rank, head in enumerate(importance.head_order(index).tolist()):  # head after head, best first
                ours, theirs = slice(rank * 8, (rank + 1) * 8), slice(head * 8, (head + 1) * 8)
                for name in ("query", "key", "value"):
                    assert torch.equal(getattr(mha, name).weight[ours], getattr(layer, name).weight[theirs])
                    assert torch.equal(getattr(mha, name).bias[ours], getattr(layer, name).bias[theirs])
                assert torch.equal(mha.output.weight[:, ours], layer.attention_output.weight[:, theirs])
            neurons = importance.neuron_order(index)
            assert torch.equal(ffn.intermediate.weight, layer.intermediate.weight[neurons])
            assert torch.equal(ffn.output.weight, layer.output.weight[:, neurons])
            # The teacher's own LayerNorms, in its coordinates.
            assert torch.equal(mha.LayerNorm.weight, layer.attention_norm.weight)
            assert torch.equal(ffn.LayerNorm.bias, layer.output_norm.bias)


def test_frequency_weighted_factorisation_keeps_frequent_tokens(setup):
    table = setup["teacher"].embeddings().word_embeddings.weight.detach().double()
    counts = setup["counts"].double()
    components, mean = frequency_weighted_directions(table, counts)
    assert torch.allclose(components @ components.T, torch.eye(32, dtype=torch.float64), atol=1e-8)

    def weighted_error(rows):  # the corpus-weighted squared error of a rank-8 factorisation
        approximation = (table - mean) @ rows.T @ rows + mean
        return (counts * ((table - approximation) ** 2).sum(1)).sum()

    plain = torch.linalg.svd(table - table.mean(0), full_matrices=False).Vh[:8]
    assert weighted_error(components[:8]) <= weighted_error(plain)  # optimal for the weighted error
    # Where the frequent tokens vary along other directions than the rare ones, it keeps theirs.
    generator = torch.Generator().manual_seed(1)
    structured = torch.randn(1000, 16, generator=generator, dtype=torch.float64) * 0.01
    structured[:900, :4] += 3 * torch.randn(900, 4, generator=generator, dtype=torch.float64)  # 900 rare tokens
    structured[900:, 4:8] += torch.randn(100, 4, generator=generator, dtype=torch.float64)  # 100 frequent ones
    frequency = torch.cat([torch.ones(900), torch.full((100,), 1000.0)]).double()
    rows = frequency_weighted_directions(structured, frequency)[0][:4]
    assert rows[:, 4:8].norm() > 0.99 * 2  # the frequent tokens' four directions
    # Narrower exported embeddings are the factorised table: its rank-8 reconstruction.
    model = from_supernet(setup["supernet"], Architecture(32, ("mha:4x8", "ffn:64") * 4, 8), setup["teacher"])
    words = model.nasbert.embeddings.projection(model.nasbert.embeddings.word_embeddings.weight).double()
    expected = (table - mean) @ components[:8].T @ components[:8] + mean
    assert torch.allclose(words, expected, atol=1e-4)
    assert count_params(model.config) == sum(p.numel() for p in model.nasbert.parameters()) + 32 * 32 + 32


def test_corpus_token_counts_count_masked_positions_by_their_original_token():
    batch = {"input_ids": torch.tensor([[2, 4, 7, 0]]), "labels": torch.tensor([[-100, 5, -100, -100]]),
             "attention_mask": torch.tensor([[1, 1, 1, 0]])}
    counts = corpus_token_counts([batch], 10)
    assert counts.tolist() == [0, 0, 1, 0, 0, 1, 0, 1, 0, 0]
    with pytest.raises(ValueError, match="no tokens"):
        corpus_token_counts([], 10)


def test_teacher_cuts_keep_first_last_and_evenly_spaced_layers(setup):
    assert teacher_cut_layers(6, 1) == [5]
    assert teacher_cut_layers(6, 2) == [0, 5]
    assert teacher_cut_layers(6, 3) == [0, 2, 5]  # round(2.5) is 2
    assert teacher_cut_layers(6, 6) == list(range(6))
    space, supernet, teacher = setup["space"], setup["supernet"], setup["teacher"]
    mapping = slot_layers(supernet, teacher)
    cut = teacher_cut(space, mapping, [0, 3], 8)
    assert cut == Architecture(32, ("mha:4x8", "ffn:64", "id", "id", "id", "id", "mha:4x8", "ffn:64"), 8)
    params = cost_model_for(Budget("params", float("inf")), embedding_factorization="word",
                            **teacher.embedding_dimensions())
    # As many layers as fit first (3: the first, the last, one between), then the widest embedding.
    limit = params.cost(teacher_cut(space, mapping, teacher_cut_layers(4, 3), 8)) + 1
    assert largest_teacher_cut(space, mapping, 4, params, limit) == teacher_cut(space, mapping, teacher_cut_layers(4, 3), 8)
    limit = params.cost(teacher_cut(space, mapping, [0, 1, 2, 3], 16)) + 1
    assert largest_teacher_cut(space, mapping, 4, params, limit) == teacher_cut(space, mapping, [0, 1, 2, 3], 16)
    assert largest_teacher_cut(space, mapping, 4, params, 10) is None
    # A cut taken from the untrained copy of a (trained) supernet is the teacher's layers exactly.
    source = untrained_copy(supernet, teacher)
    model = from_supernet(source, cut, teacher).eval()
    batch = setup["batch"]
    with torch.no_grad():
        hidden = model.nasbert(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    reference = source.encode(cut, attention_mask=batch["attention_mask"], input_ids=batch["input_ids"])
    assert (hidden - reference)[mask].abs().max() < 1e-5


TEACHER_SPACE_YAML = """\
search_space:
  hidden_sizes: [teacher]
  embedding_sizes: [8, teacher]
  ops: ["mha:teacher", "mha:teacher/2", "ffn:teacher", "ffn:teacher/2", "id"]
  slot_kinds: [mha, ffn]
  num_slots: 8
  num_blocks: 2
training:
  block_projection: teacher
  seq_len: 32
  batch_size: 8
  eval_batch_size: 8
  max_steps: 2
  learning_rate: 1.0e-4
  warmup_steps: 1
  pool_size: 200
  shrink_every: 100000
  save_steps: 100
  max_train_sequences: 200
"""


def test_a_teacher_coordinates_run_ranks_the_teacher_first_and_exports_within_budget(supernet_setup, tmp_path):
    import json

    from conftest import supernet_arguments

    from nasbert_hf.pipeline import SearchArguments, search_and_export
    from nasbert_hf.supernet_training import train_supernet

    (tmp_path / "space.yaml").write_text(TEACHER_SPACE_YAML)
    run_dir = tmp_path / "run"
    train_supernet(supernet_arguments(supernet_setup, run_dir, search_space=str(tmp_path / "space.yaml")))
    config = json.loads((run_dir / "run_config.json").read_text())
    assert config["search_space"]["ops"] == ["mha:4x8", "mha:2x8", "ffn:64", "ffn:32", "id"]
    candidates = json.loads((run_dir / "candidates.json").read_text())
    for block in candidates["blocks"]:
        best = min(block, key=lambda c: c["loss"])
        # Two steps at 1e-4 leave the teacher's own layers nearly exact: they stay the best candidate.
        assert best["layers"] == ["mha:4x8", "ffn:64"] * 2 and best["loss"] < 1e-3
    budget = 1_000_000
    summary = search_and_export(SearchArguments(run_dir=str(run_dir), budgets=[f"params={budget}"],
                                                out=str(tmp_path / "out"), top_k=2, rescore_batches=1))
    record = summary["models"][0]
    model = AutoModel.from_pretrained(tmp_path / "out" / record["name"])
    assert model.config.embedding_factorization == "word"
    assert 0.7 * budget <= sum(p.numel() for p in model.parameters()) == record["params"] <= budget


def test_a_cut_is_exported_with_whichever_weights_reproduce_the_teacher_better(supernet_setup, tmp_path):
    import json

    from conftest import supernet_arguments

    from nasbert_hf.pipeline import SearchArguments, search_and_export, teacher_dimensions
    from nasbert_hf.supernet_training import train_supernet
    from nasbert_hf.teacher_init import keeps_whole_sublayers, teacher_cut

    # Four steps at lr 0.1 wreck the supernet's copy of the teacher's layers.
    space = TEACHER_SPACE_YAML.replace("max_steps: 2", "max_steps: 4").replace("learning_rate: 1.0e-4", "learning_rate: 0.1")
    (tmp_path / "space.yaml").write_text(space)
    run_dir = tmp_path / "run"
    train_supernet(supernet_arguments(supernet_setup, run_dir, search_space=str(tmp_path / "space.yaml")))
    teacher = load_teacher(supernet_setup["teacher"])
    supernet, searched_space, run_config = Supernet.from_run(run_dir)
    # A budget only the teacher's own architecture fills (the teacher's width as E, whole sub-layers).
    whole = teacher_cut(searched_space, slot_layers(supernet, teacher), range(teacher.num_layers), teacher.hidden_size)
    params = cost_model_for(Budget("params", float("inf")), run_config["seq_len"], **teacher_dimensions(teacher, supernet))
    out = tmp_path / "out"
    summary = search_and_export(SearchArguments(run_dir=str(run_dir), budgets=[f"params={params.cost(whole)}"],
                                                out=str(out), top_k=2, rescore_batches=1, min_budget_use=1.0))
    record = summary["models"][0]
    losses = record["losses"]
    assert record["weights"] == "teacher", record["losses"]
    assert losses["assembled_validation_mse"] == losses["teacher_weights_validation_mse"]
    assert losses["teacher_weights_validation_mse"] < losses["supernet_weights_validation_mse"]
    # The exported layers are the teacher's own.
    model = AutoModel.from_pretrained(out / record["name"])
    arch = Architecture.parse(record["architecture"])
    assert arch == whole and keeps_whole_sublayers(searched_space, arch)
    layers = [layer for block in slot_layers(supernet, teacher) for layer in block]
    kept = [(slot, layers[slot]) for slot, code in enumerate(arch.layers) if code.startswith("ffn")]
    assert kept
    for slot, layer in kept:
        torch.testing.assert_close(model.encoder.layers[slot].intermediate.weight,
                                   teacher.layer(layer).intermediate.weight, rtol=0, atol=0)
    assert json.loads((out / record["name"] / "nasbert.json").read_text())["weights"] == "teacher"
    # A model that prunes heads or neurons is not a cut: it keeps the supernet's weights.
    pruned = Architecture.parse(record["architecture"].replace("ffn:64", "ffn:32", 1))
    assert not keeps_whole_sublayers(searched_space, pruned)


# -- importance and the slot-to-layer map ----------------------------------------------------

HIDDEN, HEADS, INNER, LAYERS, VOCAB = 32, 4, 64, 2, 100


def random_teacher(layers=LAYERS, hidden=HIDDEN, seed=0):
    """A tiny random BERT with non-trivial biases and LayerNorms (so that every term matters)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=HEADS,
        intermediate_size=2 * hidden, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertModel(config, add_pooling_layer=False)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    return Teacher(model=model.eval().requires_grad_(False), tokenizer=None, mlm_head=None, name="random-bert")


def batches(count=3, seed=0):
    return [dict(zip(("input_ids", "attention_mask"), random_inputs(VOCAB, seed=seed + i))) for i in range(count)]



def test_teacher_importance_skips_padding_and_sees_silenced_heads_and_neurons():
    teacher = random_teacher()
    data = batches(2)
    padded = teacher_importance(teacher, data)
    assert padded.heads.shape == (LAYERS, HEADS) and padded.neurons.shape == (LAYERS, INNER)
    assert padded.tokens == sum(int(b["attention_mask"].sum()) for b in data)
    # Each row alone, without its padding, gives the same scores.
    rows = []
    for batch in data:
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            length = int(mask.sum())
            rows.append({"input_ids": ids[None, :length], "attention_mask": mask[None, :length]})
    unpadded = teacher_importance(teacher, rows)
    torch.testing.assert_close(padded.heads, unpadded.heads, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(padded.neurons, unpadded.neurons, rtol=1e-5, atol=1e-6)
    # A head whose values are zero and a neuron whose output column is zero contribute nothing.
    layer = teacher.layer(1)
    size = layer.head_size
    with torch.no_grad():
        layer.value.weight[2 * size : 3 * size] = 0
        layer.value.bias[2 * size : 3 * size] = 0
        layer.output.weight[:, 5] = 0
    silenced = teacher_importance(teacher, data)
    assert silenced.heads[1, 2] == 0 and silenced.head_order(1)[-1] == 2
    assert silenced.neurons[1, 5] == 0 and silenced.neuron_order(1)[-1] == 5


def test_slots_map_onto_the_layers_of_their_block():
    teacher = random_teacher(layers=6, hidden=16)
    space = SearchSpace([16], ["mha:2", "ffn:32"], 12, 3)  # the tiny preset's layout: 3 blocks of 4 slots
    assert slot_layers(Supernet(space, 16), teacher) == [[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]]
    space = SearchSpace([16], ["mha:2", "ffn:32"], 6, 3)  # 2 slots per 2 layers: one slot a layer
    assert slot_layers(Supernet(space, 16), teacher) == [[0, 1], [2, 3], [4, 5]]


def test_a_teacher_without_bert_style_layers_is_refused():
    config = DistilBertConfig(vocab_size=VOCAB, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=64)
    teacher = Teacher(model=DistilBertModel(config).eval(), tokenizer=None, mlm_head=None, name="distilbert")
    with pytest.raises(ValueError, match="no BERT-style layer 0"):
        teacher.layer(0)
    with pytest.raises(ValueError, match="BERT-family teachers"):
        teacher_importance(teacher, batches(1))
    with pytest.raises(ValueError, match="out of range"):
        random_teacher().layer(LAYERS)
