import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import BertConfig

from nasbert_hf.architecture import Architecture
from nasbert_hf.arguments import preset_names, read_config
from nasbert_hf.distill import DistillArguments
from nasbert_hf.search_space import SearchSpace, check_against_teacher, load_search_space
from nasbert_hf.supernet_training import SupernetTrainingArguments

REPO = Path(__file__).resolve().parents[1]
SMALL = SearchSpace([8, 12], ["mha:2", "mha:3", "mha:4", "ffn:16", "conv:3", "id"], 4, 2)


def test_presets_are_the_documented_spaces():
    assert {"tiny", "base"} <= set(preset_names())
    # Both are derived from their teacher (BertConfig's defaults are BERT-base's): its width, its heads
    # and neurons and their most important halves and quarters, in typed attention / feed-forward slots.
    base = load_search_space("base", BertConfig())
    assert (base.num_slots, base.num_blocks, base.slots_per_block) == (24, 4, 6)
    assert base.hidden_sizes == (768,) and base.slot_kinds == ("mha", "ffn")
    assert set(base.ops) == {"mha:12x64", "mha:6x64", "mha:3x64", "ffn:3072", "ffn:1536", "ffn:768", "id"}
    tiny = load_search_space("tiny")  # the embedded all-MiniLM-L6-v2
    assert (tiny.num_slots, tiny.num_blocks) == (12, 3) and tiny.hidden_sizes == (384,)
    assert set(tiny.ops) == {"mha:12x32", "mha:6x32", "mha:3x32", "ffn:1536", "ffn:768", "ffn:384", "id"}
    # The paper's embedding widths (64 for its 5M model, 128 for 10-20M, 256 for 25-35M, 384/512 above),
    # a narrower one for the smallest budget, and the teacher's own (its table whole).
    assert tiny.embedding_sizes == (32, 64, 128, 256, 384) and base.embedding_sizes == (64, 128, 256, 384, 512, 768)


def test_small_preset_is_the_tiny_space_trained_longer():
    # The two default-teacher families differ only in training length (docs/finetuning.md compares them).
    assert "small" in preset_names()
    assert load_search_space("small") == load_search_space("tiny")
    tiny, small = read_config("tiny"), read_config("small")
    # Every key is an argument of its stage (a typo would fail only when someone runs the preset).
    training = SupernetTrainingArguments.from_config("small", output_dir="o")
    distill = small.section("distill", fields_of=DistillArguments)
    assert training.max_steps >= 5 * tiny.section("training")["max_steps"]
    assert training.max_train_sequences is None  # the whole embedded sample
    assert distill["max_steps"] > tiny.section("distill")["max_steps"]
    assert training.seq_len == tiny.section("training")["seq_len"]


def test_recipe_configs_are_links_to_the_packaged_presets():
    for name in ("tiny", "small", "base"):
        link = REPO / "recipes" / "configs" / f"{name}.yaml"
        assert link.is_symlink() and not Path(link.readlink()).is_absolute()
        assert link.resolve() == (REPO / "nasbert_hf" / "presets" / f"{name}.yaml").resolve()
        teacher = BertConfig() if name == "base" else None  # base names BERT-base (offline here)
        assert load_search_space(link, teacher) == load_search_space(name, teacher)


def test_size_is_the_exact_number_of_architectures():
    # Counted by hand: at hidden 8, mha:3 does not fit (5 ops); at 12 all 6 fit.
    assert SMALL.ops_for(8) == ("mha:2", "mha:4", "ffn:16", "conv:3", "id")
    assert SMALL.ops_for(12) == SMALL.ops
    # One hidden size per block: every block picks any candidate of any width.
    assert SMALL.size() == (5**2 + 6**2) ** 2
    assert SearchSpace([8, 12], SMALL.ops, 4, 2, embedding_sizes=[4, 8]).size() == 2 * (5**2 + 6**2) ** 2
    assert SMALL.block_size() == 5**2 + 6**2 == len(list(SMALL.enumerate_block()))
    assert len(set(SMALL.enumerate_block())) == SMALL.block_size()
    one_block = SearchSpace([8, 12], SMALL.ops, 3, 1)
    assert one_block.size() == one_block.block_size() == len(list(one_block.enumerate_block()))
    tiny = load_search_space("tiny")
    assert tiny.size() == 5 * (4**4) ** 3  # 5 embedding widths; 4 choices in each of 4 typed slots
    base = load_search_space("base", BertConfig())
    assert base.size() == 6 * (4**6) ** 4
    assert isinstance(base.size(), int)
    # The paper's space (narrower widths in principal coordinates): head counts fit only some widths.
    paper = SearchSpace([128, 192, 256, 384, 512], ["mha:2", "mha:3", "mha:4", "mha:6", "mha:8", "ffn:512", "ffn:768",
                        "ffn:1024", "ffn:1536", "ffn:2048", "conv:3", "conv:5", "conv:7", "id"], 24, 4,
                        embedding_sizes=[64, 128, 256, 384, 512])
    # 192 and 384 take every head count (2, 3, 4, 6, 8): 14 ops; 128, 256, 512 take 2, 4, 8: 12 ops.
    assert paper.size() == 5 * (2 * 14**6 + 3 * 12**6) ** 4


def test_round_trips_through_dict_yaml_and_json(tmp_path):
    assert SearchSpace.from_dict(SMALL.to_dict()) == SMALL
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SMALL.to_dict()))
    assert load_search_space(path) == SMALL
    yaml_path = tmp_path / "space.yaml"
    yaml_path.write_text("search_space:\n  hidden_sizes: [8, 12]\n  ops: [mha:2, mha:3, mha:4, ffn:16, conv:3, id]\n"
                         "  num_slots: 4\n  num_blocks: 2\ntraining:\n  max_steps: 7\n")
    assert load_search_space(yaml_path) == SMALL
    assert read_config(yaml_path).section("training") == {"max_steps": 7}
    assert read_config(path).section("training") == {}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_sizes=[16, 8]), "strictly ascending"),
        (dict(hidden_sizes=[]), "non-empty"),
        (dict(ops=["mha:5"]), "5 heads divide none of hidden_sizes"),
        (dict(ops=["conv:4"]), "odd"),
        (dict(ops=["lstm:3"]), "Unknown op code 'lstm:3'"),
        (dict(ops=["id", "id"]), "distinct"),
        (dict(num_slots=5), "num_slots=5 must be a positive multiple of num_blocks=2"),
        (dict(num_blocks=0), "num_blocks=0"),
        (dict(embedding_sizes=[16, 8]), "embedding_sizes=\\[16, 8\\] must be strictly ascending"),
    ],
)
def test_invalid_spaces_raise_clear_errors(kwargs, message):
    fields = dict(hidden_sizes=[8, 16], ops=["mha:2", "id"], num_slots=4, num_blocks=2)
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SearchSpace(**fields)


def test_unknown_or_missing_fields_and_files():
    with pytest.raises(ValueError, match=r"unknown \['heads'\], missing \['num_blocks'\]"):
        SearchSpace.from_dict({"hidden_sizes": [8], "ops": ["id"], "num_slots": 2, "heads": 3})
    with pytest.raises(FileNotFoundError, match="'nope.yaml' is neither a preset"):
        load_search_space("nope.yaml")


def test_validate_split_and_join():
    arch = Architecture(8, ("mha:2", "conv:3", "id", "ffn:16"))
    blocks = SMALL.split(arch)
    assert blocks == [Architecture(8, ("mha:2", "conv:3")), Architecture(8, ("id", "ffn:16"))]
    assert SMALL.join(blocks) == arch
    with pytest.raises(ValueError, match="slot 1 op 'conv:5' is not one of"):
        SMALL.validate(Architecture(8, ("id", "conv:5", "id", "id")))
    with pytest.raises(ValueError, match="hidden size 16 is not one of"):
        SMALL.validate(Architecture(16, ("id",) * 4))
    with pytest.raises(ValueError, match="has 3 slots, the space has 4"):
        SMALL.validate(Architecture(8, ("id",) * 3))
    # Blocks may differ in hidden size (the paper's per-block hidden size); slots of one block may not.
    mixed = SMALL.join([Architecture(8, ("id", "ffn:16")), Architecture(12, ("mha:3", "id"))])
    assert mixed.widths == (8, 8, 12, 12) and SMALL.split(mixed)[1] == Architecture(12, ("mha:3", "id"))
    with pytest.raises(ValueError, match="every slot of a block has the same hidden size"):
        SMALL.validate(Architecture.from_widths((8, 12, 12, 12), ("id",) * 4))
    with_embeddings = SearchSpace([8, 12], SMALL.ops, 4, 2, embedding_sizes=[4, 8])
    with pytest.raises(ValueError, match="embedding size None is not one of"):
        with_embeddings.validate(arch)
    with_embeddings.validate(Architecture(8, arch.layers, embedding_size=4))
    assert list(SMALL.block_slots(1)) == [2, 3]


def test_sampling_is_reproducible_and_stays_in_the_space():
    first = [SMALL.sample_block(random.Random(3)) for _ in range(5)]
    assert first == [SMALL.sample_block(random.Random(3)) for _ in range(5)]
    rng = random.Random(0)
    for _ in range(200):
        SMALL.validate(SMALL.sample_block(rng), block=0)


def test_more_blocks_than_teacher_layers_is_refused():
    teacher = SimpleNamespace(name="tiny-teacher", num_layers=1)
    with pytest.raises(ValueError, match="num_blocks=2 blocks but teacher 'tiny-teacher' has only 1 layers"):
        check_against_teacher(SMALL, teacher)
    check_against_teacher(SMALL, SimpleNamespace(name="ok", num_layers=2))
