import pytest
import torch

from nasbert_hf import Architecture, NasBertConfig
from nasbert_hf.latency import LatencyTable, measure_latency_table, model_runner, random_architectures
from nasbert_hf.search import Budget, cost_model_for

OPS = ["mha:2", "ffn:64", "conv:3", "id"]


@pytest.fixture(scope="module")
def table():
    return measure_latency_table(OPS, [32, 64], batch_size=1, seq_len=16, vocab_size=100, copies=2, repeats=3, progress=False)


def test_table_covers_every_op_and_hidden_size(table):
    assert sorted(table.base_ms) == [32, 64]
    assert set(table.op_ms[32]) == {"mha:2", "ffn:64", "conv:3"}
    assert all(value >= 0 for ops in table.op_ms.values() for value in ops.values())
    assert table.base_ms[32] > 0


def test_prediction_is_skeleton_plus_ops(table):
    arch = Architecture(64, ("mha:2", "id", "conv:3", "conv:3"))
    expected = table.base_ms[64] + table.op_ms[64]["mha:2"] + 2 * table.op_ms[64]["conv:3"]
    assert table.predict(arch) == pytest.approx(expected)


def test_table_round_trips(tmp_path, table):
    path = tmp_path / "tables" / "cpu.json"
    table.save(path)
    loaded = LatencyTable.load(path)
    assert loaded == table
    arch = random_architectures(OPS, [32, 64], 4, 1, seed=1)[0]
    assert loaded.predict(arch) == table.predict(arch)
    assert not list(path.parent.glob("*.tmp"))


def test_missing_entries_and_bad_files_are_named(tmp_path, table):
    with pytest.raises(ValueError, match="no entry for op 'ffn:128' at hidden size 64"):
        table.predict(Architecture(64, ("ffn:128",)))
    with pytest.raises(ValueError, match="no entry for the model skeleton at hidden size 128"):
        table.predict(Architecture(128, ("id",)))
    bad = tmp_path / "bad.json"
    bad.write_text('{"device": "cpu"}')
    with pytest.raises(ValueError, match="is not a latency table"):
        LatencyTable.load(bad)


def test_latency_budgets_need_a_table_for_their_device(table):
    assert cost_model_for(Budget.parse("latency=5ms@cpu"), latency_tables={"cpu": table}) is table
    with pytest.raises(ValueError, match="needs a latency table for device 'cuda'"):
        cost_model_for(Budget.parse("latency=5ms@cuda"), latency_tables={"cpu": table})


def test_unknown_device_is_named():
    with pytest.raises(ValueError, match="Unknown latency device 'tpu'"):
        measure_latency_table(OPS, [32], device="tpu")


def test_calibration_scales_op_costs_and_round_trips(tmp_path, table):
    from nasbert_hf.latency import calibrate

    archs = random_architectures(OPS, [32, 64], 4, 4, seed=3)
    raw = {arch: table.layers_cost(arch.layers, arch.hidden_size) for arch in archs}
    calibrated = calibrate(LatencyTable(**{**table.__dict__}), archs, repeats=2)
    assert set(calibrated.op_scale) == {arch.hidden_size for arch in archs}
    for arch in archs:
        assert calibrated.op_scale[arch.hidden_size] > 0
        expected = table.base_ms[arch.hidden_size] + calibrated.op_scale[arch.hidden_size] * raw[arch]
        assert calibrated.predict(arch) == pytest.approx(expected)
    calibrated.save(tmp_path / "table.json")
    assert LatencyTable.load(tmp_path / "table.json").op_scale == calibrated.op_scale


def test_ort_cpu_times_the_onnx_graph_of_the_same_model():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    config = NasBertConfig(hidden_size=32, layers=["mha:2", "ffn:64"], vocab_size=100, max_position_embeddings=32)
    torch.manual_seed(0)
    eager = model_runner(config, "cpu", batch_size=2, seq_len=16)
    torch.manual_seed(0)  # the same weights and inputs
    onnx = model_runner(config, "ort-cpu", batch_size=2, seq_len=16)
    expected, got = eager().last_hidden_state.numpy(), onnx()["last_hidden_state"]
    assert got.shape == expected.shape and abs(got - expected).max() < 1e-4
    table = measure_latency_table(["ffn:64"], [32], device="ort-cpu", seq_len=16, vocab_size=100, copies=1,
                                  repeats=2, progress=False)
    assert table.device == "ort-cpu" and "onnxruntime" in table.machine
    assert table.base_ms[32] > 0 and table.op_ms[32]["ffn:64"] >= 0
