import pytest

from nasbert_hf import Architecture
from nasbert_hf.latency import LatencyTable, measure_latency_table, random_architectures
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
