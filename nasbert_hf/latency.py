"""Latency lookup tables: predict an architecture's latency on a device from per-op measurements.

`nasbert latency-table` measures, on the machine it runs on, the latency of the model skeleton
(embeddings, projection, pooler: a model whose only slot is `id`) for every hidden size, and of
every op at every hidden size. An op's entry is measured inside a real model, as
`(time(skeleton + n copies of the op) - time(skeleton)) / n`, so it includes the per-op overheads
a real forward pass pays. A whole model is predicted as skeleton + the sum of its ops; the
prediction error is measured against real whole-model timings (`prediction_error`).

Ops measured in stacks of identical copies run a little slower than the same ops in a mixed
model (measured here: whole models predicted ~20% too slow), so the table is calibrated on a
few random whole architectures: one scale factor for the op costs of each hidden size, fitted by
least squares (`op_scale`). The prediction stays a sum of per-op costs, so the search over it
stays exact.

Timings on a busy machine are noise, and a table built from noise predicts nonsense (a negative
calibration scale, negative latencies), so a table refuses it:
- each op is measured in `ROUNDS` independent rounds; when their estimates spread by more than
  `MAX_SPREAD` of the timed model, the op is measured again (up to `OP_TRIES` times);
- every coefficient must be finite and non-negative (the skeleton and the calibration scales
  positive), so no prediction is negative; a table file that breaks this is refused on load;
- a calibrated table is validated on a few other random whole architectures: when the median
  relative error exceeds the device's limit (`MAX_ERROR`, or `$NASBERT_LATENCY_MAX_ERROR`), the
  whole table is measured again, and after `TABLE_TRIES` measurements it fails with an error
  that says so. The validation's errors are recorded in the table (`validation`).

Devices (`RUNTIMES`): `cpu` and `cuda` time eager PyTorch, `ort-cpu` ONNX Runtime's CPU provider
on the exported graph. A table is measured on the machine it describes; a run folder keeps one
per device as `latency-<device>.json`, and latency budgets `latency=8ms@<device>` use it.
"""

import importlib.util
import logging
import math
import os
import random
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .architecture import Architecture
from .cost import CostModel
from .folders import read_json, write_json
from .modeling import NasBertConfig, NasBertModel
from .search_space import op_fits
from .timing import describe_machine, time_interleaved

# Latency devices: name -> (runtime, torch device of the model and inputs). `ort-cpu` times ONNX
# Runtime's CPU provider on the graph `nasbert export-onnx` writes (the deployed path on CPUs).
RUNTIMES = {"cpu": ("torch", "cpu"), "cuda": ("torch", "cuda"), "ort-cpu": ("onnxruntime", "cpu")}

logger = logging.getLogger(__name__)

ROUNDS = 3  # independent timings of each op, whose spread says whether the machine is quiet
MAX_SPREAD = 0.1  # most spread of an op's estimates, as a fraction of the timed model's latency
OP_TRIES = 3  # measurements of a noisy op before its quietest one is kept
TABLE_TRIES = 2  # measurements of a whole table before a bad validation is an error
VALIDATION_MODELS = 4  # random whole architectures a calibrated table is validated on
# Largest median relative error on whole models a table may have. An idle machine gives about 2% on
# cpu for the narrow ops of principal-coordinate spaces, 26-30% for the tiny preset's teacher-width
# ops (the additive op model misses cache effects at width 384), and 20% on ort-cpu (ONNX Runtime
# fuses ops; docs/search.md); a busy one 100% and more.
MAX_ERROR = {"cpu": 0.5, "cuda": 0.25, "ort-cpu": 0.5}
MAX_ERROR_ENV = "NASBERT_LATENCY_MAX_ERROR"


class NoisyTableError(ValueError):
    """The timings of a table do not hold together (a bad calibration or validation): measure again."""


@dataclass
class LatencyTable(CostModel):
    """Milliseconds per forward pass on one device, at one batch size and sequence length."""

    device: str
    batch_size: int
    seq_len: int
    embedding_size: int
    vocab_size: int
    machine: str
    base_ms: dict = field(default_factory=dict)  # hidden size -> skeleton latency
    op_ms: dict = field(default_factory=dict)  # hidden size -> {op code: latency}
    op_scale: dict = field(default_factory=dict)  # hidden size -> calibration of its op costs (module doc)
    validation: dict = field(default_factory=dict)  # the errors on whole models it was validated on (`validate`)

    metric = "latency"

    def __post_init__(self):
        # JSON keys are strings; hidden sizes are ints.
        self.base_ms = {int(h): float(v) for h, v in self.base_ms.items()}
        self.op_ms = {int(h): {code: float(v) for code, v in ops.items()} for h, ops in self.op_ms.items()}
        self.op_scale = {int(h): float(v) for h, v in self.op_scale.items()}
        self.check()

    def check(self):
        """Raise `ValueError` unless every coefficient is finite, the op costs non-negative and the
        skeletons and scales positive: then no prediction can be negative."""
        entries = [(f"skeleton at hidden size {h}", v, True) for h, v in self.base_ms.items()]
        entries += [(f"op {code!r} at hidden size {h}", v, False)
                    for h, ops in self.op_ms.items() for code, v in ops.items()]
        entries += [(f"op scale at hidden size {h}", v, True) for h, v in self.op_scale.items()]
        for what, value, positive in entries:
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise NoisyTableError(
                    f"Latency table for {self.device}: the {what} is {value:g}, which no real timing gives "
                    f"(it must be finite and {'positive' if positive else 'non-negative'}); the timings were noise. "
                    f"Measure the table again on a quiet machine (`nasbert latency-table --device {self.device}`)."
                )
        return self

    def _missing(self, what, hidden_size):
        return ValueError(
            f"Latency table for {self.device} has no entry for {what} at hidden size {hidden_size} "
            f"(hidden sizes: {sorted(self.base_ms)}); re-measure it with `nasbert latency-table --device {self.device}`."
        )

    def base_cost(self, hidden_size):
        if hidden_size not in self.base_ms:
            raise self._missing("the model skeleton", hidden_size)
        return self.base_ms[hidden_size]

    def embedding_cost(self, embedding_size, hidden_size):
        # The skeleton (embeddings, projection to the first width, pooler) measured at the table's
        # embedding width; a narrower embedding only shortens a lookup and a small projection.
        return self.base_cost(hidden_size)

    def op_cost(self, code, hidden_size):
        if code == "id":
            return 0.0
        try:
            return self.op_scale.get(hidden_size, 1.0) * self.op_ms[hidden_size][code]
        except KeyError:
            raise self._missing(f"op {code!r}", hidden_size) from None

    def predict(self, arch):
        return self.cost(arch)

    def save(self, path):
        """Write atomically: a crash never leaves a half-written table."""
        write_json(path, asdict(self), sort_keys=True)

    @classmethod
    def load(cls, path):
        try:
            return cls(**read_json(path))
        except TypeError as error:
            raise ValueError(f"{path} is not a latency table: {error}") from None
        except NoisyTableError as error:
            raise ValueError(f"{path}: {error}") from None


def model_runner(config, device="cpu", batch_size=1, seq_len=128):
    """A zero-argument callable running one inference forward pass of `NasBertModel(config)` on a
    latency device (`RUNTIMES`; any other name is a torch device)."""
    runtime, torch_device = RUNTIMES.get(device, ("torch", device))
    model = NasBertModel(config).eval().to(torch_device)
    input_ids = torch.randint(1, config.vocab_size, (batch_size, seq_len), device=torch_device)
    attention_mask = torch.ones_like(input_ids)
    if runtime == "onnxruntime":
        return _onnx_runner(model, input_ids, attention_mask)

    def forward():
        with torch.inference_mode():
            return model(input_ids, attention_mask=attention_mask)

    return forward


def _onnx_runner(model, input_ids, attention_mask):
    """The same forward pass through an ONNX Runtime CPU session on the exported graph."""
    from .export_onnx import load_session, run_session, trace_to_onnx

    with tempfile.TemporaryDirectory() as folder:  # the session holds the graph once it is built
        path = Path(folder) / "model.onnx"
        trace_to_onnx(model, path, "feature-extraction")
        session = load_session(path, threads=torch.get_num_threads())
    ids, mask = input_ids.numpy(), attention_mask.numpy()
    types = np.zeros_like(ids)
    return lambda: run_session(session, ids, mask, types)


def _config(hidden_size, layers, embedding_size, vocab_size, seq_len):
    return NasBertConfig(
        hidden_size=hidden_size, layers=list(layers), embedding_size=embedding_size or hidden_size,
        vocab_size=vocab_size, max_position_embeddings=max(512, seq_len),
    )


def check_device(device):
    """Raise `ValueError` when `device` is not a latency device or cannot be timed on this machine."""
    if device not in RUNTIMES:
        raise ValueError(f"Unknown latency device {device!r}; known: {', '.join(RUNTIMES)}.")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("Latency device 'cuda' asked for, but torch sees no CUDA device here.")
    if RUNTIMES[device][0] == "onnxruntime":
        missing = [name for name in ("onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
        if missing:
            raise ValueError(f"Latency device {device!r} needs {' and '.join(missing)}: "
                             "pip install 'nasbert-hf[onnx]'.")


def machine_of(device):
    """The machine and runtime a latency device's timings come from (kept in every table)."""
    runtime, torch_device = RUNTIMES[device]
    machine = describe_machine(torch_device)
    if runtime == "onnxruntime":
        import onnxruntime

        machine += f", onnxruntime {onnxruntime.__version__}"
    return machine


def measure_latency_table(
    ops, hidden_sizes, device="cpu", batch_size=1, seq_len=128, embedding_size=None, vocab_size=30522,
    copies=4, repeats=20, progress=True, calibration=(), validation=None, max_error=None,
):
    """Measure a `LatencyTable` for every op code in `ops` at every hidden size, calibrate its op
    costs on the whole architectures in `calibration` (none: no calibration), and validate it on
    those in `validation` (default: `VALIDATION_MODELS` other random ones when calibrating, else
    none) against `max_error` (default: `max_error_for(device)`). A table that fails calibration or
    validation is measured again; after `TABLE_TRIES` measurements, `ValueError` says why."""
    check_device(device)
    if validation is None:
        validation = _default_validation(ops, hidden_sizes, calibration)
    limit = max_error_for(device, max_error)
    for attempt in range(1, TABLE_TRIES + 1):
        table = _measure_ops(ops, hidden_sizes, device, batch_size, seq_len, embedding_size, vocab_size, copies,
                             repeats, progress)
        try:
            if calibration:
                calibrate(table, calibration, repeats)
            if validation:
                validate(table, validation, repeats, limit)
            return table.check()
        except NoisyTableError as error:
            if attempt == TABLE_TRIES:
                raise NoisyTableError(
                    f"{error} The table was measured {TABLE_TRIES} times. Timings need a quiet machine: measure "
                    f"again when no other jobs run, or accept a larger error with {MAX_ERROR_ENV}=<fraction> "
                    "(`nasbert latency-table --max-error`)."
                ) from None
            logger.warning("%s Measuring the table again.", error)


def max_error_for(device, max_error=None):
    """The largest median relative error a table of `device` may have: `max_error`, else
    `$NASBERT_LATENCY_MAX_ERROR`, else `MAX_ERROR[device]`."""
    value = max_error if max_error is not None else os.environ.get(MAX_ERROR_ENV) or MAX_ERROR[device]
    try:
        limit = float(value)
    except ValueError:
        limit = math.nan
    if not limit > 0:
        raise ValueError(f"Latency max error {value!r} ({MAX_ERROR_ENV} or --max-error) must be a positive fraction.")
    return limit


def _default_validation(ops, hidden_sizes, calibration):
    """`VALIDATION_MODELS` random architectures shaped like the calibration ones (another seed)."""
    if not calibration:
        return []
    return random_architectures(list(ops) + ["id"], hidden_sizes, len(calibration[0].layers), VALIDATION_MODELS,
                                seed=2)


def _measure_ops(ops, hidden_sizes, device, batch_size, seq_len, embedding_size, vocab_size, copies, repeats,
                 progress):
    """The uncalibrated table: the skeleton and every op at every hidden size (`_op_ms`)."""
    table = LatencyTable(device, batch_size, seq_len, embedding_size, vocab_size, machine_of(device))
    work = [(h, code) for h in hidden_sizes for code in ops if code != "id" and op_fits(code, h)]
    bar = tqdm(total=len(work), desc=f"latency table ({device})", disable=not progress)
    for hidden in hidden_sizes:
        skeleton = model_runner(_config(hidden, ["id"], embedding_size, vocab_size, seq_len), device, batch_size, seq_len)
        table.op_ms[hidden] = {}
        base_samples = []
        for code in [c for h, c in work if h == hidden]:
            stacked = model_runner(_config(hidden, [code] * copies, embedding_size, vocab_size, seq_len),
                                   device, batch_size, seq_len)
            what = f"{code} at H{hidden}"
            table.op_ms[hidden][code], base_ms = _op_ms(skeleton, stacked, copies, repeats, device, what)
            base_samples.append(base_ms)
            bar.update()
        if not base_samples:
            base_samples.append(time_interleaved({"base": skeleton}, repeats, device=RUNTIMES[device][1])["base"] * 1e3)
        table.base_ms[hidden] = statistics.median(base_samples)
    bar.close()
    return table


def _op_ms(skeleton, stacked, copies, repeats, device, what):
    """`(op ms, skeleton ms)` from `ROUNDS` interleaved timings of the skeleton and the stacked model.

    The rounds' op estimates must agree within `MAX_SPREAD` of the stacked model's latency;
    otherwise the op is timed again, up to `OP_TRIES` times, and the quietest try is kept (the
    table's validation then judges it). An estimate below zero is noise around a cost too small
    to see, hence 0."""
    per_round = max(2, math.ceil(repeats / ROUNDS))
    tries = []
    for _ in range(OP_TRIES):
        rounds = [time_interleaved({"base": skeleton, "op": stacked}, per_round, warmup=0 if index else 3,
                                   device=RUNTIMES[device][1]) for index in range(ROUNDS)]
        estimates = [(times["op"] - times["base"]) * 1e3 / copies for times in rounds]
        stacked_ms = statistics.median(times["op"] for times in rounds) * 1e3
        spread = (max(estimates) - min(estimates)) * copies / stacked_ms
        base_ms = statistics.median(times["base"] for times in rounds) * 1e3
        tries.append((spread, max(0.0, statistics.median(estimates)), base_ms))
        if spread <= MAX_SPREAD:
            break
        logger.info("Latency of %s is noisy (estimates spread by %.0f%% of the model); timing it again.", what,
                    100 * spread)
    spread, op_ms, base_ms = min(tries)
    return op_ms, base_ms


def calibrate(table, archs, repeats=20):
    """Fit `table.op_scale[H]` so that skeleton + scale * ops best matches the measured whole
    models of hidden size H (least squares; hidden sizes without a calibration model keep 1).
    A scale that is not positive and finite (whole models measured as fast as their skeleton or
    faster: noise) raises `NoisyTableError`."""
    table.op_scale = {}
    sums = {}
    for arch in archs:
        measured = measure_model_latency(arch, table.device, table.batch_size, table.seq_len, table.embedding_size,
                                         table.vocab_size, repeats)
        ops = table.layers_cost(arch.layers, arch.hidden_size)  # calibration models are uniform
        rest = measured - table.base_cost(arch.hidden_size)
        products, squares = sums.get(arch.hidden_size, (0.0, 0.0))
        sums[arch.hidden_size] = (products + ops * rest, squares + ops * ops)
    table.op_scale = {hidden: products / squares for hidden, (products, squares) in sums.items() if squares > 0}
    return table.check()


def validate(table, archs, repeats=20, max_error=None):
    """Record in `table.validation` how well it predicts the whole models `archs` (`prediction_error`);
    raise `NoisyTableError` when the median relative error exceeds `max_error` (default
    `max_error_for(table.device)`)."""
    limit = max_error_for(table.device, max_error)
    rows, median = prediction_error(table, archs, repeats)
    table.validation = {
        "median_error": median, "max_error": max(row[2] for row in rows), "limit": limit,
        "models": [{"architecture": str(arch), "predicted_ms": predicted, "measured_ms": measured, "error": error}
                   for arch, (predicted, measured, error) in zip(archs, rows)],
    }
    if median > limit:
        raise NoisyTableError(
            f"Latency table for {table.device} mispredicts whole models: median error {median:.0%} (max "
            f"{table.validation['max_error']:.0%}) on {len(rows)} random architectures, above the limit of {limit:.0%}."
        )
    return table


def measure_model_latency(arch, device="cpu", batch_size=1, seq_len=128, embedding_size=None, vocab_size=30522, repeats=20):
    """Measured milliseconds per forward pass of the whole model of `arch` (at its own embedding
    width, else `embedding_size`)."""
    check_device(device)
    config = arch.to_config(embedding_size=arch.embedding_size or embedding_size or arch.input_width,
                            vocab_size=vocab_size, max_position_embeddings=max(512, seq_len))
    runner = model_runner(config, device, batch_size, seq_len)
    return time_interleaved({"model": runner}, repeats, device=RUNTIMES[device][1])["model"] * 1e3


def random_architectures(ops, hidden_sizes, num_slots, count, seed=0):
    """`count` random architectures over the given choices (heads always divide the hidden size)."""
    rng = random.Random(seed)
    archs = []
    while len(archs) < count:
        hidden = rng.choice(list(hidden_sizes))
        layers = [rng.choice([c for c in ops if op_fits(c, hidden)]) for _ in range(num_slots)]
        archs.append(Architecture(hidden, tuple(layers)))
    return archs


def prediction_error(table, archs, repeats=20):
    """Per architecture `(predicted_ms, measured_ms, relative_error)`, plus the median relative error."""
    rows = []
    for arch in archs:
        measured = measure_model_latency(arch, table.device, table.batch_size, table.seq_len,
                                         table.embedding_size, table.vocab_size, repeats)
        predicted = table.predict(arch)
        rows.append((predicted, measured, abs(predicted - measured) / measured))
    return rows, statistics.median(row[2] for row in rows)
