import json

import pytest
import torch

from nasbert_hf import Architecture, NasBertConfig, latency
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


# -- refusing noise, on a fake machine ------------------------------------------------------------

COSTS = {"mha:2": 0.5, "ffn:64": 0.3, "conv:3": 0.2, "id": 0.0}  # ms per op; the skeleton takes 1 ms


class FakeMachine:
    """Stands in for `model_runner` and `time_interleaved`: a model takes 1 ms plus its ops' `COSTS`,
    times `noise(name, call)` (name: "base", "op" or "model"; call: 1, 2, ... per timing)."""

    def __init__(self):
        self.noise, self.calls = (lambda name, call: 1.0), 0

    def runner(self, config, device="cpu", batch_size=1, seq_len=128):
        ms = 1.0 + sum(COSTS[code] for code in config.layers)
        return lambda: ms

    def time(self, functions, repeats, warmup=3, device="cpu"):
        self.calls += 1
        return {name: function() * self.noise(name, self.calls) / 1e3 for name, function in functions.items()}


@pytest.fixture
def machine(monkeypatch):
    fake = FakeMachine()
    monkeypatch.setattr(latency, "model_runner", fake.runner)
    monkeypatch.setattr(latency, "time_interleaved", fake.time)
    monkeypatch.delenv(latency.MAX_ERROR_ENV, raising=False)
    return fake


def fake_table(**kwargs):
    return measure_latency_table(["mha:2", "ffn:64", "conv:3"], [32], copies=2, repeats=3, progress=False, **kwargs)


def test_calibration_scales_op_costs_and_round_trips(machine, tmp_path):
    from nasbert_hf.latency import calibrate

    machine.noise = lambda name, call: 0.9 if name == "model" else 1.0  # mixed models run a little faster
    archs = [Architecture(32, ("mha:2", "ffn:64", "conv:3", "id")),
             Architecture(32, ("mha:2", "mha:2", "ffn:64", "id"))]
    table = fake_table()
    raw = [table.layers_cost(arch.layers, 32) for arch in archs]  # 1.0 and 1.3 ms
    calibrated = calibrate(LatencyTable(**{**table.__dict__}), archs, repeats=2)
    # Least squares of (measured - skeleton) = scale * ops, with measured = 0.9 * (1 + ops).
    scale = sum(ops * (0.9 * (1 + ops) - 1) for ops in raw) / sum(ops * ops for ops in raw)
    assert calibrated.op_scale == {32: pytest.approx(scale)}
    for arch, ops in zip(archs, raw):
        assert calibrated.predict(arch) == pytest.approx(1.0 + scale * ops)
    calibrated.save(tmp_path / "table.json")
    assert LatencyTable.load(tmp_path / "table.json").op_scale == calibrated.op_scale


def test_a_noisy_op_is_timed_again(machine):
    # The first timing of the first op runs while another job takes the machine: 1.5x slower.
    machine.noise = lambda name, call: 1.5 if (name, call) == ("op", 1) else 1.0
    table = fake_table()
    assert table.op_ms[32] == pytest.approx({code: cost for code, cost in COSTS.items() if code != "id"})
    assert table.base_ms[32] == pytest.approx(1.0)
    assert machine.calls == 3 * latency.ROUNDS + latency.ROUNDS  # 3 ops, the first timed twice


def test_a_table_that_mispredicts_whole_models_is_measured_again_then_refused(machine, tmp_path):
    machine.noise = lambda name, call: 0.5 if name == "model" else 1.0  # whole models: half what the ops add up to
    archs = [Architecture(32, ("mha:2", "ffn:64")), Architecture(32, ("conv:3", "id"))]
    with pytest.raises(ValueError, match=r"median error 100% \(max 100%\) on 2 random architectures, above the "
                                         r"limit of 50%\. The table was measured 2 times.*NASBERT_LATENCY_MAX_ERROR"):
        fake_table(validation=archs)
    calls = machine.calls
    assert calls == 2 * (3 * latency.ROUNDS + len(archs))
    # A looser limit accepts it, and the table records the errors it was validated with.
    table = fake_table(validation=archs, max_error=3)
    assert machine.calls == calls + 3 * latency.ROUNDS + len(archs)
    assert table.validation["median_error"] == pytest.approx(1.0) and table.validation["limit"] == 3
    assert [row["architecture"] for row in table.validation["models"]] == [str(arch) for arch in archs]
    table.save(tmp_path / "table.json")
    assert LatencyTable.load(tmp_path / "table.json").validation == table.validation


def test_a_calibration_to_a_negative_scale_is_refused(machine):
    # Whole models measured faster than their own skeleton: the least-squares scale is negative.
    machine.noise = lambda name, call: 0.3 if name == "model" else 1.0
    with pytest.raises(ValueError, match=r"the op scale at hidden size 32 is -\d.*measured 2 times"):
        fake_table(calibration=[Architecture(32, ("conv:3", "id"))], validation=[])


@pytest.mark.parametrize("entry, message", [
    ({"op_scale": {"256": -0.092}}, "the op scale at hidden size 256 is -0.092"),
    ({"base_ms": {"32": float("nan")}}, "the skeleton at hidden size 32 is nan"),
    ({"op_ms": {"32": {"ffn:64": -1.0}}}, "the op 'ffn:64' at hidden size 32 is -1"),
])
def test_a_table_file_with_impossible_coefficients_is_refused(tmp_path, table, entry, message):
    path = tmp_path / "table.json"
    table.save(path)
    data = json.loads(path.read_text())
    for key, value in entry.items():
        data[key] = {**data[key], **value}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"{path}: Latency table for cpu: {message}"):
        LatencyTable.load(path)
