import pytest

from nasbert_hf import Architecture, NasBertConfig, parse_op


@pytest.mark.parametrize(
    "code, expected",
    [("mha:4", ("mha", 4)), ("ffn:1024", ("ffn", 1024)), ("conv:7", ("conv", 7)), ("id", ("id", 0))],
)
def test_parse_op(code, expected):
    assert parse_op(code) == expected


@pytest.mark.parametrize("code", ["attn:4", "mha", "mha:0", "ffn:-3", "conv:x", "id:1", "", 3])
def test_unknown_op_code_is_named(code):
    with pytest.raises(ValueError, match="(?i)op code"):
        NasBertConfig(hidden_size=64, layers=["mha:4", code])


def test_heads_must_divide_hidden_size():
    with pytest.raises(ValueError, match=r"Slot 1 \('mha:5'\): hidden size 64 is not divisible by 5 heads"):
        NasBertConfig(hidden_size=64, layers=["ffn:32", "mha:5"])


def test_even_conv_kernel_rejected():
    with pytest.raises(ValueError, match="conv kernel 4 is even"):
        NasBertConfig(hidden_size=64, layers=["conv:4"])


def test_empty_layers_rejected():
    with pytest.raises(ValueError, match="`layers` is empty"):
        NasBertConfig(hidden_size=64, layers=[])


def test_config_json_round_trip(tmp_path):
    config = NasBertConfig(vocab_size=99, hidden_size=96, embedding_size=48, layers=["mha:3", "conv:5", "id", "ffn:200"])
    config.save_pretrained(tmp_path)
    loaded = NasBertConfig.from_pretrained(tmp_path)
    assert loaded.layers == ["mha:3", "conv:5", "id", "ffn:200"]
    assert (loaded.hidden_size, loaded.embedding_size, loaded.vocab_size) == (96, 48, 99)
    assert loaded.auto_map["AutoModelForQuestionAnswering"] == "modeling_nasbert.NasBertForQuestionAnswering"


def test_architecture_round_trips_through_config_and_text():
    arch = Architecture(128, ("mha:2", "ffn:512", "conv:3", "id"))
    assert Architecture.from_config(arch.to_config(vocab_size=50)) == arch
    assert Architecture.parse(str(arch)) == arch
    assert Architecture.from_dict(arch.to_dict()) == arch
    assert hash(arch) == hash(Architecture(128, ["mha:2", "ffn:512", "conv:3", "id"]))


def test_architecture_validates():
    with pytest.raises(ValueError, match="not divisible"):
        Architecture(100, ("mha:3",))
    with pytest.raises(ValueError, match="Cannot parse architecture"):
        Architecture.parse("256[mha:4]")


def test_embedding_projection_is_on_when_sizes_differ_or_when_asked():
    assert not NasBertConfig(hidden_size=64, layers=["id"]).has_embedding_projection
    assert NasBertConfig(hidden_size=64, embedding_size=32, layers=["id"]).has_embedding_projection
    assert NasBertConfig(hidden_size=64, embedding_projection=True, layers=["id"]).has_embedding_projection
    needs = "embedding_projection=False needs embedding_size == the first slot's hidden size"
    with pytest.raises(ValueError, match=needs):
        NasBertConfig(hidden_size=64, embedding_size=32, embedding_projection=False, layers=["id"])
