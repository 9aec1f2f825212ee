"""Per-slot hidden widths (`layer_hidden_sizes`, issue #11): config, resize link, costs, saving, export."""

import json

import pytest
import torch
from conftest import assert_loads_without_the_package, random_inputs
from torch.utils.flop_counter import FlopCounterMode

from nasbert_hf import (
    NasBertConfig,
    NasBertForMaskedLM,
    NasBertForSequenceClassification,
    NasBertModel,
    count_flops,
    count_params,
)
from nasbert_hf.cost import embedding_params
from nasbert_hf.export_onnx import TASKS, export_model, load_session
from nasbert_hf.modeling import resize_hidden, validate_layers
from nasbert_hf.quantization import INT8_TOLERANCE, int8_error, quantize_onnx, quantize_torch

LAYERS = ["mha:4", "ffn:96", "conv:3", "id", "mha:8", "ffn:100"]
INCREASING = [128, 128, 192, 192, 256, 256]
DECREASING = INCREASING[::-1]


def mixed_config(widths=INCREASING, layers=LAYERS, **kwargs):
    defaults = dict(vocab_size=321, max_position_embeddings=33, embedding_size=64, num_labels=2,
                    layer_hidden_sizes=widths)
    return NasBertConfig(hidden_size=widths[-1], layers=layers, **{**defaults, **kwargs})


def test_config_widths_and_json_round_trip(tmp_path):
    config = mixed_config()
    assert config.slot_hidden_sizes == tuple(INCREASING) and config.hidden_size == 256
    assert config.has_embedding_projection  # 64 -> the first slot's 128
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["layer_hidden_sizes"] == INCREASING
    loaded = NasBertConfig.from_pretrained(tmp_path)
    assert loaded.layer_hidden_sizes == INCREASING and loaded.slot_hidden_sizes == tuple(INCREASING)
    # A config saved before per-slot widths existed (no key) loads as uniform.
    plain = json.loads((tmp_path / "config.json").read_text())
    del plain["layer_hidden_sizes"]
    (tmp_path / "config.json").write_text(json.dumps(plain))
    old = NasBertConfig.from_pretrained(tmp_path)
    assert old.layer_hidden_sizes is None and old.slot_hidden_sizes == (256,) * len(LAYERS)


def test_embedding_projection_compares_with_the_first_slot():
    # embedding_size == first width: no projection, even though hidden_size (the last width) differs.
    assert not mixed_config(embedding_size=128).has_embedding_projection
    assert mixed_config(embedding_size=128, embedding_projection=True).has_embedding_projection
    assert NasBertModel(mixed_config(embedding_size=128)).embeddings.projection is None
    with pytest.raises(ValueError, match="embedding_projection=False needs embedding_size == the first slot"):
        mixed_config(embedding_size=256, embedding_projection=False)


def test_bad_widths_are_named():
    with pytest.raises(ValueError, match=r"Slot 4 \('mha:8'\): hidden size 100 is not divisible by 8 heads"):
        mixed_config([128, 128, 192, 192, 100, 256])
    with pytest.raises(ValueError, match=r"5 widths for 6 slots: slot 5 \('ffn:100'\) has no width"):
        NasBertConfig(hidden_size=256, layers=LAYERS, layer_hidden_sizes=INCREASING[:5])
    with pytest.raises(ValueError, match="7 widths for 6 slots: there is no slot 6"):
        NasBertConfig(hidden_size=256, layers=LAYERS, layer_hidden_sizes=INCREASING + [256])
    with pytest.raises(ValueError, match=r"hidden_size \(192\) must equal the last of layer_hidden_sizes \(256\)"):
        NasBertConfig(hidden_size=192, layers=LAYERS, layer_hidden_sizes=INCREASING)
    with pytest.raises(ValueError, match="Slot 2: hidden size must be a positive integer"):
        NasBertConfig(hidden_size=256, layers=LAYERS, layer_hidden_sizes=[128, 128, 0, 192, 256, 256])
    # validate_layers takes one width for every slot, as before, or one per slot.
    validate_layers(["mha:4", "ffn:8"], 64)
    validate_layers(["mha:3", "mha:4"], [96, 64])
    with pytest.raises(ValueError, match=r"Slot 1 \('mha:3'\)"):
        validate_layers(["mha:4", "mha:3"], [96, 64])


def test_resize_link_truncates_or_pads_with_zeros():
    x = torch.randn(2, 5, 8)
    assert resize_hidden(x, 8) is x
    assert torch.equal(resize_hidden(x, 3), x[..., :3])
    padded = resize_hidden(x, 12)
    assert padded.shape == (2, 5, 12)
    assert torch.equal(padded[..., :8], x) and not padded[..., 8:].any()


@pytest.mark.parametrize("widths", [INCREASING, DECREASING], ids=["increasing", "decreasing"])
def test_forward_shapes_and_padding(widths):
    model = NasBertModel(mixed_config(widths)).eval()
    input_ids, attention_mask = random_inputs(321, batch=3, length=12)
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True, output_attentions=True)
        # Row 1 has 10 real tokens: alone and unpadded its outputs are the same (conv zeroes padding).
        alone = model(input_ids[1:2, :10]).last_hidden_state
    assert out.last_hidden_state.shape == (3, 12, widths[-1]) and out.pooler_output.shape == (3, widths[-1])
    # The embeddings' output is at the first slot's width, then one state per slot at its own width.
    assert [h.shape[-1] for h in out.hidden_states] == [widths[0], *widths]
    assert len(out.attentions) == 2
    torch.testing.assert_close(out.last_hidden_state[1:2, :10], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("widths", [INCREASING, DECREASING], ids=["increasing", "decreasing"])
def test_param_count_is_exact(widths):
    config = mixed_config(widths)
    model = NasBertModel(config)
    assert count_params(config) == sum(p.numel() for p in model.parameters())
    embeddings = sum(p.numel() for p in model.embeddings.parameters())
    assert embedding_params(config) == embeddings
    assert count_params(config, embeddings=False) == sum(p.numel() for p in model.parameters()) - embeddings
    no_pool = NasBertModel(config, add_pooling_layer=False)
    assert count_params(config, pooler=False) == sum(p.numel() for p in no_pool.parameters())


@pytest.mark.parametrize("widths", [INCREASING, DECREASING], ids=["increasing", "decreasing"])
def test_flops_match_torch_flop_counter(widths):
    config = mixed_config(widths)
    model = NasBertModel(config).eval()
    counter = FlopCounterMode(display=False)
    # output_attentions=True runs attention as explicit matmuls, which the counter sees on every backend.
    with counter, torch.no_grad():
        model(torch.randint(0, 321, (2, 16)), output_attentions=True)
    assert count_flops(config, seq_len=16, batch_size=2) == counter.get_total_flops()


def test_equal_widths_behave_as_the_uniform_model():
    uniform = NasBertForMaskedLM(mixed_config([128] * 6, layer_hidden_sizes=None)).eval()
    assert uniform.config.layer_hidden_sizes is None
    listed = NasBertForMaskedLM(mixed_config([128] * 6)).eval()
    assert listed.config.layer_hidden_sizes == [128] * 6
    assert listed.state_dict().keys() == uniform.state_dict().keys()
    listed.load_state_dict(uniform.state_dict())
    assert count_params(listed.config) == count_params(uniform.config)
    assert count_flops(listed.config, 16) == count_flops(uniform.config, 16)
    input_ids, attention_mask = random_inputs(321)
    with torch.no_grad():
        assert torch.equal(listed(input_ids, attention_mask=attention_mask).logits,
                           uniform(input_ids, attention_mask=attention_mask).logits)


def test_save_and_reload_give_identical_outputs(tmp_path):
    model = NasBertForMaskedLM(mixed_config(DECREASING)).eval()
    assert model.cls.decoder.weight is model.nasbert.embeddings.word_embeddings.weight  # still tied
    assert model.cls.dense.in_features == DECREASING[-1]
    model.save_pretrained(tmp_path)
    loaded = NasBertForMaskedLM.from_pretrained(tmp_path).eval()
    assert loaded.config.slot_hidden_sizes == tuple(DECREASING)
    input_ids, attention_mask = random_inputs(321)
    with torch.no_grad():
        assert torch.equal(model(input_ids, attention_mask=attention_mask).logits,
                           loaded(input_ids, attention_mask=attention_mask).logits)


def test_trust_remote_code_without_the_package(tmp_path):
    """The copied modeling files alone load a mixed-width model, in a process that cannot import nasbert_hf."""
    model = NasBertForSequenceClassification(mixed_config())
    assert_loads_without_the_package(model, tmp_path / "model", 321, checks=f"""
        assert model.config.slot_hidden_sizes == {tuple(INCREASING)!r}
    """)
    assert {"modeling_nasbert.py", "configuration_nasbert.py"} <= {p.name for p in (tmp_path / "model").iterdir()}


def tiny_mixed(task, widths, embedding_size=16):
    layers = ["mha:4", "ffn:64", "conv:3", "id", "conv:5", "mha:2"]
    config = mixed_config(widths, layers, vocab_size=100, max_position_embeddings=64, embedding_size=embedding_size)
    return TASKS[task].auto_class.from_config(config).eval()


@pytest.mark.parametrize(
    "task, widths",
    [("sequence-classification", [16, 32, 32, 48, 48, 24]), ("masked-lm", [48, 48, 32, 16, 16, 32])],
    ids=["up-down", "down-up"],
)
def test_onnx_export_matches_eager(tmp_path, task, widths):
    model = tiny_mixed(task, widths)
    assert export_model(model, tmp_path / "model.onnx", task) < 1e-4  # ONNX Runtime parity on padded batches
    assert [item.name for item in load_session(tmp_path / "model.onnx").get_outputs()] == list(TASKS[task].outputs)


def test_int8_onnx_and_torch_within_tolerance(tmp_path):
    # Token logits (many outputs) keep the relative error of so tiny a random model steady; a 2-logit
    # classifier's ONNX int8 error swings past the tolerance with the seed, mixed widths or not.
    task = "token-classification"
    model = tiny_mixed(task, [32, 64, 64, 96, 96, 48], embedding_size=32)
    export_model(model, tmp_path / "model.onnx", task)
    quantize_onnx(tmp_path / "model.onnx", tmp_path / "model_int8.onnx")
    errors = int8_error(model, task, tmp_path / "model_int8.onnx", quantize_torch(model))
    assert set(errors) == {"onnx", "torch"}
    for backend, error in errors.items():
        assert 0 < error < INT8_TOLERANCE, (backend, error)
