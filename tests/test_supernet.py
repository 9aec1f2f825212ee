import random

import pytest
import torch
from conftest import SPACE, random_inputs, save_random_teacher, teacher_like_states

from nasbert_hf.architecture import Architecture
from nasbert_hf.blockwise import BlockwiseStudent, masked_mse, masked_sse
from nasbert_hf.export import from_supernet
from nasbert_hf.search_space import SearchSpace
from nasbert_hf.supernet import Supernet, evaluate_architecture, sampled

@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_random_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def mlm_teacher_dir(tmp_path_factory):
    return save_random_teacher(tmp_path_factory.mktemp("mlm_teacher"), mlm=True)


def trained_like_supernet(space=SPACE, teacher_hidden=20, seed=0):
    """A supernet whose LayerNorms and biases are not at their initial values (so slices matter)."""
    torch.manual_seed(seed)
    supernet = Supernet(space, teacher_hidden)
    with torch.no_grad():
        for name, parameter in supernet.named_parameters():
            if parameter.ndim == 1:
                parameter.add_(torch.randn_like(parameter) * 0.3)
    return supernet.eval()


def test_sampled_path_equals_standalone_blocks_with_sliced_weights():
    supernet = trained_like_supernet()
    _, attention_mask = random_inputs(100, batch=3, length=12)
    states = teacher_like_states(3, 12, 20, SPACE.num_blocks + 1)
    rng = random.Random(0)
    for _ in range(12):
        archs = [SPACE.sample_block(rng) for _ in range(SPACE.num_blocks)]
        standalone = supernet.export_blocks(archs).eval()
        assert isinstance(standalone, BlockwiseStudent)
        torch.testing.assert_close(supernet(states, attention_mask, archs), standalone(states, attention_mask), rtol=0, atol=1e-6)
        for block, arch in enumerate(archs):
            expected = standalone.blocks[block](states[block], attention_mask.bool())
            got = supernet.blocks[block](states[block], attention_mask.bool(), arch)
            assert got.shape == (3, 12, 20)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_standalone_blocks_have_exactly_the_sampled_sizes():
    supernet = trained_like_supernet()
    arch = Architecture(16, ("mha:4", "ffn:32", "conv:5"))
    block = supernet.export_blocks([arch, Architecture(32, ("id", "id", "ffn:64"))]).blocks[0]
    assert block.input_projection.weight.shape == (16, 20)
    assert block.output_projection.weight.shape == (20, 16)
    attention, ffn, conv = block.encoder.layers
    assert attention.num_heads == 4 and attention.query.weight.shape == (16, 16)
    assert ffn.intermediate.weight.shape == (32, 16) and ffn.output.weight.shape == (16, 32)
    assert conv.depthwise.weight.shape == (16, 1, 5)
    source = supernet.blocks[0].slots[1].ops["ffn"]
    assert torch.equal(ffn.intermediate.weight, source.intermediate.weight[:32, :16])
    assert torch.equal(ffn.output.weight, source.output.weight[:16, :32])


def test_sampling_slices_weights_and_never_copies_them():
    supernet = trained_like_supernet().train()
    pointers = {name: p.data_ptr() for name, p in supernet.named_parameters()}
    archs = [Architecture(16, ("mha:2", "ffn:32", "id")), Architecture(24, ("conv:3", "id", "id"))]
    states = teacher_like_states(2, 8, 20, 3)
    supernet(states, None, archs).sum().backward()
    assert {name: p.data_ptr() for name, p in supernet.named_parameters()} == pointers
    slot = supernet.blocks[0].slots[1]
    grad = slot.ops["ffn"].intermediate.weight.grad
    assert grad[:32, :16].abs().sum() > 0 and grad[32:].abs().sum() == 0 and grad[:, 16:].abs().sum() == 0
    # Ops that were not sampled get no gradient at all, and nothing of block 1 reaches block 0.
    assert slot.ops["mha"].query.weight.grad is None
    assert supernet.blocks[1].slots[0].ops["conv5"].depthwise.weight.grad is None
    assert supernet.blocks[0].slots[0].ops["mha"].num_heads == 4  # the sampled head count was restored


def test_sampled_restores_attributes_on_error():
    supernet = trained_like_supernet()
    attention = supernet.blocks[0].slots[0].ops["mha"]
    with pytest.raises(RuntimeError):
        with sampled(attention, num_heads=2):
            assert attention.num_heads == 2
            raise RuntimeError("boom")
    assert attention.num_heads == 4


def test_bad_architectures_are_rejected():
    supernet = trained_like_supernet()
    states = teacher_like_states(2, 8, 20, 3)
    with pytest.raises(ValueError, match="1 block architectures for 2 blocks"):
        supernet(states, None, [Architecture(16, ("id", "id", "id"))])
    with pytest.raises(ValueError, match="hidden size 48"):
        supernet.encode(Architecture(48, ("id",) * 6), states[0])
    with pytest.raises(ValueError, match="5 teacher hidden states for 2 blocks"):
        supernet(states[:2] + states, None, [Architecture(16, ("id",) * 3)] * 2)
    with pytest.raises(ValueError, match="block 1 candidate.*'conv:7' is not one of"):
        supernet(states, None, [Architecture(16, ("id",) * 3), Architecture(16, ("conv:7", "id", "id"))])


def test_block_losses_use_the_teachers_hidden_states_at_block_boundaries(teacher_dir):
    from accelerate import Accelerator

    from nasbert_hf.blockwise import distillation_step
    from nasbert_hf.teacher import load_teacher

    teacher = load_teacher(teacher_dir)
    supernet = Supernet(SPACE, teacher.hidden_size)
    input_ids, attention_mask = random_inputs(teacher.vocab_size, batch=3, length=10)
    archs = [Architecture(24, ("mha:2", "ffn:64", "conv:3")), Architecture(16, ("conv:5", "id", "mha:4"))]
    # Reference: the teacher's own hidden states, read at layers 0, 2 and 4 of its 4 layers.
    with torch.no_grad():
        hidden = teacher.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        key_mask = attention_mask.bool()
        expected = [
            masked_mse(supernet.blocks[0](hidden[0], key_mask, archs[0]), hidden[2], attention_mask),
            masked_mse(supernet.blocks[1](hidden[2], key_mask, archs[1]), hidden[4], attention_mask),
        ]
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.0)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    losses = distillation_step(Accelerator(cpu=True), supernet, teacher, batch, optimizer, block_archs=archs)
    torch.testing.assert_close(losses, torch.stack(expected))


def test_masked_mse_ignores_padding():
    prediction, target = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    target[1, 2] = 100.0
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert masked_mse(prediction, target, mask).item() == pytest.approx(1.0)
    assert masked_mse(prediction, target).item() > 1.0


@pytest.mark.parametrize("mlm", [False, True])
def test_export_equals_the_chained_supernet_path(tmp_path, mlm, teacher_dir, mlm_teacher_dir):
    from nasbert_hf.teacher import load_teacher

    teacher = load_teacher(mlm_teacher_dir if mlm else teacher_dir)
    assert (teacher.mlm_head is not None) == mlm
    supernet = trained_like_supernet(teacher_hidden=teacher.hidden_size)
    arch = Architecture(24, ("mha:2", "ffn:64", "conv:3", "conv:5", "id", "mha:4"))
    model = from_supernet(supernet, arch, teacher).eval()
    input_ids, attention_mask = random_inputs(teacher.vocab_size, batch=3, length=10)
    with torch.no_grad():
        states = teacher.block_states(input_ids, attention_mask, SPACE.num_blocks)
        # The exported embeddings (before the projection) are the teacher's.
        projection, model.nasbert.embeddings.projection = model.nasbert.embeddings.projection, None
        torch.testing.assert_close(model.nasbert.embeddings(input_ids), states[0])
        model.nasbert.embeddings.projection = projection
        encoded = supernet.encode(arch, states[0], attention_mask)
        output = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        torch.testing.assert_close(output.hidden_states[-1], encoded, rtol=1e-5, atol=1e-5)
        # The MLM head continues the supernet's output projection (into the teacher's head when it has one).
        projected = supernet.project(encoded)
        if mlm:
            expected_logits = teacher.mlm_head(projected)
        else:  # no teacher head: a plain LayerNorm and a zero bias after the projection
            norm = model.cls.LayerNorm
            assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not model.cls.bias.any()
            expected_logits = model.cls.decoder(norm(model.cls.act(projected)))
        torch.testing.assert_close(output.logits, expected_logits, rtol=1e-4, atol=1e-4)
    assert model.config.layers == list(arch.layers) and model.config.hidden_size == 24
    assert model.cls.decoder.weight is model.nasbert.embeddings.word_embeddings.weight
    # The export is an ordinary saved-and-reloaded model.
    from transformers import AutoModelForMaskedLM

    model.save_pretrained(tmp_path / "exported")
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "exported").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids, attention_mask=attention_mask).logits, output.logits)


def test_export_at_the_teachers_width_keeps_block_0s_input_projection(teacher_dir):
    from nasbert_hf.teacher import load_teacher

    teacher = load_teacher(teacher_dir)
    space = SearchSpace([16, 32], SPACE.ops, 6, 2)
    supernet = trained_like_supernet(space, teacher_hidden=teacher.hidden_size)
    arch = Architecture(32, ("mha:4", "ffn:64") * 3)
    model = from_supernet(supernet, arch, teacher).eval()
    assert model.config.embedding_size == model.config.hidden_size == 32 and model.config.embedding_projection
    input_ids, attention_mask = random_inputs(teacher.vocab_size, batch=2, length=9)
    with torch.no_grad():
        states = teacher.block_states(input_ids, attention_mask, space.num_blocks)
        output = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        torch.testing.assert_close(output.hidden_states[-1], supernet.encode(arch, states[0], attention_mask), rtol=1e-5, atol=1e-5)


def test_evaluate_architecture_is_the_chained_validation_loss(teacher_dir):
    from nasbert_hf.teacher import load_teacher

    teacher = load_teacher(teacher_dir)
    supernet = trained_like_supernet(teacher_hidden=teacher.hidden_size)
    arch = Architecture(16, ("mha:2", "ffn:64", "conv:3", "conv:5", "id", "mha:4"))
    batches = []
    for seed in range(3):
        input_ids, attention_mask = random_inputs(teacher.vocab_size, batch=2, length=9, seed=seed)
        batches.append({"input_ids": input_ids, "attention_mask": attention_mask})
    sse = count = 0.0
    with torch.no_grad():
        for batch in batches[:2]:
            hidden = teacher.model(**batch, output_hidden_states=True).hidden_states
            prediction = supernet.project(supernet.encode(arch, hidden[0], batch["attention_mask"]))
            weights = batch["attention_mask"][..., None].float()
            sse += ((prediction - hidden[-1]) ** 2 * weights).sum().item()
            count += weights.sum().item() * teacher.hidden_size
    loss = evaluate_architecture(supernet, teacher, arch, batches, max_batches=2)
    assert loss == pytest.approx(sse / count, rel=1e-5)
    assert evaluate_architecture(supernet, teacher, str(arch), batches, max_batches=2) == loss
    with pytest.raises(ValueError, match="no batches"):
        evaluate_architecture(supernet, teacher, arch, [])


EMBEDDING_SPACE = SearchSpace([16, 24, 32], SPACE.ops, 6, 2, embedding_sizes=[8, 16])


def fitted_embedding_supernet(teacher, perturb=True):
    """A supernet that searches the embedding width, with projections and embeddings fitted to `teacher`."""
    from nasbert_hf.projections import fit_boundary_bases

    torch.manual_seed(0)
    supernet = Supernet(EMBEDDING_SPACE, teacher.hidden_size, block_projection="pca", vocab_size=teacher.vocab_size,
                        max_position_embeddings=128)
    batches = [dict(zip(("input_ids", "attention_mask"), random_inputs(teacher.vocab_size, batch=4, length=16,
                                                                        seed=seed))) for seed in range(3)]
    bases = fit_boundary_bases(teacher, batches, EMBEDDING_SPACE.num_blocks, supernet.projection_rows)
    supernet.fit_projections(bases)
    supernet.init_embeddings(teacher, bases)
    with torch.no_grad():  # non-trivial LayerNorms and biases, so that slices matter
        for name, parameter in supernet.named_parameters():
            if perturb and parameter.ndim == 1 and parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return supernet.eval(), bases


def test_searched_embedding_starts_from_the_teachers(teacher_dir):
    """The student's token table is the teacher's on the leading principal directions of its
    embedding output, never random, and at full width it reproduces block 0's input."""
    from nasbert_hf.teacher import load_teacher

    teacher = load_teacher(teacher_dir)
    supernet, bases = fitted_embedding_supernet(teacher, perturb=False)
    components = bases[0][0]
    teacher_table = teacher.model.embeddings.word_embeddings.weight
    torch.testing.assert_close(supernet.embeddings.word_embeddings.weight, teacher_table @ components[:16].T)
    assert torch.equal(supernet.embeddings.rotation, components[:16])
    # Scored against the teacher's embedding output, the initial embedding beats predicting the mean.
    input_ids, attention_mask = random_inputs(teacher.vocab_size, batch=3, length=12, seed=9)
    with torch.no_grad():
        target = teacher.block_states(input_ids, attention_mask, EMBEDDING_SPACE.num_blocks)[0]
        sse, count = supernet.embedding_sse((16, 32), input_ids, target, attention_mask)
        mean_sse, _ = masked_sse(bases[0][2].expand_as(target), target, attention_mask)
    assert sse / mean_sse < 0.9


@pytest.mark.parametrize("mlm", [False, True])
def test_mixed_width_export_with_searched_embedding_equals_the_chained_path(tmp_path, mlm, teacher_dir, mlm_teacher_dir):
    from transformers import AutoModelForMaskedLM

    from nasbert_hf.teacher import load_teacher

    teacher = load_teacher(mlm_teacher_dir if mlm else teacher_dir)
    supernet, _ = fitted_embedding_supernet(teacher)
    arch = EMBEDDING_SPACE.join([Architecture(32, ("mha:4", "ffn:64", "conv:3")), Architecture(16, ("conv:5", "id", "mha:2"))],
                                embedding_size=8)
    model = from_supernet(supernet, arch, teacher).eval()
    assert model.config.embedding_size == 8 and model.config.slot_hidden_sizes == (32, 32, 32, 16, 16, 16)
    input_ids, attention_mask = random_inputs(teacher.vocab_size, batch=3, length=10)
    with torch.no_grad():
        encoded = supernet.encode(arch, attention_mask=attention_mask, input_ids=input_ids)
        output = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        torch.testing.assert_close(output.hidden_states[-1], encoded, rtol=1e-5, atol=1e-5)
        # The MLM head maps the supernet's output into the student's embedding coordinates, tied decoder.
        head_input = supernet.embeddings.rotation[:8] @ supernet.project(encoded)[..., None]
        torch.testing.assert_close(model.cls.dense(output.hidden_states[-1]), head_input[..., 0], rtol=1e-4, atol=1e-4)
    assert model.cls.decoder.weight is model.nasbert.embeddings.word_embeddings.weight
    model.save_pretrained(tmp_path / "exported")
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "exported").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids, attention_mask=attention_mask).logits, output.logits)


def test_embedding_search_needs_pca_projections_and_a_vocabulary():
    with pytest.raises(ValueError, match="needs block_projection 'teacher' or 'pca'"):
        Supernet(EMBEDDING_SPACE, 20, block_projection="learned", vocab_size=100)
    with pytest.raises(ValueError, match="exceeds the teacher's width"):
        Supernet(EMBEDDING_SPACE, 12, block_projection="pca", vocab_size=100)


def test_save_and_from_run_give_the_same_supernet(tmp_path):
    import json

    supernet = trained_like_supernet()
    supernet.save(tmp_path / "supernet.safetensors")
    run_config = {"search_space": SPACE.to_dict(), "supernet": supernet.init_kwargs()}
    (tmp_path / "run_config.json").write_text(json.dumps(run_config))
    loaded, space, config = Supernet.from_run(tmp_path)
    assert space == SPACE and config == run_config
    states = teacher_like_states(2, 8, 20, 3)
    archs = [Architecture(32, ("mha:4", "ffn:64", "conv:5")), Architecture(16, ("conv:3", "mha:2", "ffn:32"))]
    assert torch.equal(loaded(states, None, archs), supernet(states, None, archs))
    with pytest.raises(FileNotFoundError, match="not a finished supernet run"):
        Supernet.from_run(tmp_path / "missing")
