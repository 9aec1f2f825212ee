"""Export to ONNX with the torch dynamo exporter, checked against eager PyTorch with ONNX Runtime.

`export_onnx(model_dir, out_dir)` writes `out_dir/model.onnx` (dynamic `batch` and `sequence`
axes; inputs `input_ids`, `attention_mask`, `token_type_ids`, all int64) next to the model's
config and tokenizer, so the folder describes itself. The graph is first written to a temporary
file in `out_dir`, run by ONNX Runtime on random padded batches of several shapes and compared
with the eager model; only a graph whose largest difference is below `atol` (1e-4) is renamed
into place. A failing graph raises `OnnxParityError` and leaves nothing behind.

Works for any Hugging Face model of the task (the latency benchmark exports plain BERT too).
"""

import contextlib
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .folders import atomic_path, check_model_dir, write_json

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
ONNX_FILE = "model.onnx"
REPORT_FILE = "export_report.json"
DEFAULT_ATOL = 1e-4
# (batch, sequence) of the parity batches: none equals the traced example's (2, 8), so they also
# prove that both axes are dynamic; the single-row batch has no padding (the eager no-mask path).
PARITY_SHAPES = ((3, 17), (1, 9), (4, 5))


@dataclass(frozen=True)
class Task:
    auto_class: type
    outputs: tuple  # output names, in the model's output order


TASKS = {
    "masked-lm": Task(AutoModelForMaskedLM, ("logits",)),
    "sequence-classification": Task(AutoModelForSequenceClassification, ("logits",)),
    "question-answering": Task(AutoModelForQuestionAnswering, ("start_logits", "end_logits")),
    "token-classification": Task(AutoModelForTokenClassification, ("logits",)),
    "feature-extraction": Task(AutoModel, ("last_hidden_state",)),
}

# Head class name suffix -> task, to pick the task a saved model was trained for.
_HEAD_SUFFIXES = {
    "ForMaskedLM": "masked-lm",
    "ForSequenceClassification": "sequence-classification",
    "ForQuestionAnswering": "question-answering",
    "ForTokenClassification": "token-classification",
}


class OnnxParityError(ValueError):
    """ONNX Runtime's outputs differ from eager PyTorch by more than the tolerance."""


@dataclass
class ExportReport:
    onnx_file: str  # relative to the folder holding the report
    task: str
    opset: int
    max_abs_diff: float  # largest |ONNX Runtime - eager| over every parity batch and output
    atol: float
    parity_shapes: list = field(default_factory=lambda: [f"{batch}x{length}" for batch, length in PARITY_SHAPES])
    int8: dict | None = None  # filled by `nasbert export-onnx --quantize int8`
    dev: dict | None = None  # filled by `nasbert export-onnx --dev-data DIR` (an `AccuracyReport`)

    def save(self, folder):
        write_json(Path(folder) / REPORT_FILE, asdict(self))


def get_task(name):
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; valid: {', '.join(TASKS)}.")
    return TASKS[name]


def task_of(config):
    """The task of a saved model's head (from `config.architectures`); `feature-extraction` if none."""
    for architecture in getattr(config, "architectures", None) or ():
        for suffix, task in _HEAD_SUFFIXES.items():
            if architecture.endswith(suffix):
                return task
    return "feature-extraction"


def load_model(model_dir, task=None):
    """`(model, task)` from a saved folder, in eval mode; `task` defaults to the saved head's."""
    import nasbert_hf  # noqa: F401  (registers `nasbert` with the Auto classes)

    check_model_dir(model_dir, model_type=None)  # any Hugging Face model of the task
    task = task or task_of(AutoConfig.from_pretrained(model_dir))
    model = get_task(task).auto_class.from_pretrained(model_dir, use_safetensors=True)
    return model.eval(), task


class _TupleOutputs(torch.nn.Module):
    """The model with positional int64 inputs and a tuple of the task's outputs: what the exporter traces."""

    def __init__(self, model, outputs):
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, input_ids, attention_mask, token_type_ids):
        result = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tuple(result[name] for name in self.outputs)


@contextlib.contextmanager
def _quiet_exporter():
    """Hide the exporter's progress chatter and known-harmless warnings (e.g. torchvision absent)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def random_padded_inputs(vocab_size, batch, length, seed=0):
    """`(input_ids, attention_mask, token_type_ids)`, int64: row 0 is full, the others have random
    padded tails, and a random split into two segments marks type-1 tokens."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    positions = torch.arange(length)[None]
    attention_mask = (positions < lengths[:, None]).long()
    input_ids = torch.randint(1, vocab_size, (batch, length), generator=generator) * attention_mask
    splits = (lengths * torch.rand(batch, generator=generator)).long()
    token_type_ids = ((positions >= splits[:, None]) & attention_mask.bool()).long()
    return input_ids, attention_mask, token_type_ids


def _type_vocab_size(model):
    return getattr(model.config, "type_vocab_size", 1)


def _parity_inputs(model, batch, length, seed):
    input_ids, attention_mask, token_type_ids = random_padded_inputs(model.config.vocab_size, batch, length, seed)
    if _type_vocab_size(model) < 2:
        token_type_ids = torch.zeros_like(token_type_ids)
    return input_ids, attention_mask, token_type_ids


def trace_to_onnx(model, path, task, opset=None):
    """Export `model` (a `task` model) to the ONNX file `path` with dynamic batch and sequence axes."""
    outputs = get_task(task).outputs
    example = _parity_inputs(model, 2, min(8, model.config.max_position_embeddings), seed=1)
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            _TupleOutputs(model, outputs).eval(),
            example,
            dynamo=True,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=list(outputs),
            dynamic_shapes={name: axes for name in INPUT_NAMES},
            verbose=False,
        )
        # One self-contained file: the temporary file is renamed after checking, which would
        # break the link to an external-data file (NasBert models are far below protobuf's 2 GB).
        program.save(str(path), external_data=False)


def load_session(path, threads=None):
    """An ONNX Runtime CPU session for `path`; a missing or corrupted file raises a clear error."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist; create it with `nasbert export-onnx`.")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise ValueError(
            f"{path} is not a valid ONNX model ({type(error).__name__}: {str(error).strip()[:300]}); "
            "re-export it with `nasbert export-onnx`."
        ) from error


def run_session(session, input_ids, attention_mask, token_type_ids=None):
    """The session's outputs as `{name: array}`; feeds only the inputs the graph declares."""
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    if token_type_ids is None:
        arrays["token_type_ids"] = np.zeros_like(np.asarray(input_ids))
    feed = {item.name: np.asarray(arrays[item.name], dtype=np.int64) for item in session.get_inputs()}
    names = [item.name for item in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def eager_outputs(model, task, input_ids, attention_mask, token_type_ids):
    with torch.no_grad():
        result = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    return {name: result[name].float().numpy() for name in get_task(task).outputs}


def parity_batches(model, shapes=PARITY_SHAPES):
    """The random padded `(input_ids, attention_mask, token_type_ids)` batches the checks compare on."""
    limit = model.config.max_position_embeddings
    return [_parity_inputs(model, batch, min(length, limit), seed) for seed, (batch, length) in enumerate(shapes)]


def max_abs_diff(model, session, task, shapes=PARITY_SHAPES):
    """Largest |ONNX Runtime - eager PyTorch| over every output of every parity batch."""
    worst = 0.0
    for inputs in parity_batches(model, shapes):
        reference = eager_outputs(model, task, *inputs)
        candidate = run_session(session, *(tensor.numpy() for tensor in inputs))
        for name, expected in reference.items():
            worst = max(worst, float(np.abs(candidate[name] - expected).max()))
    return worst


def export_model(model, path, task, atol=DEFAULT_ATOL, opset=None):
    """Export `model` to `path` if ONNX Runtime matches eager PyTorch within `atol`; the max diff.

    The graph goes to a temporary file beside `path` and is renamed only after the check passes.
    """
    get_task(task)
    model.eval()
    with atomic_path(path) as temporary:
        trace_to_onnx(model, temporary, task, opset)
        diff = max_abs_diff(model, load_session(temporary), task)
        if not diff < atol:
            raise OnnxParityError(
                f"ONNX Runtime differs from eager PyTorch by {diff:.3g} (> atol {atol:g}) on random padded "
                f"inputs; refusing to write {path}. Report it with the model's config, or raise --atol "
                "if that difference is acceptable."
            )
    return diff


def opset_of(path):
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def copy_model_metadata(model_dir, out_dir):
    """Copy the config (and its code) and the tokenizer beside the ONNX file, when there is one."""
    from transformers import AutoTokenizer

    AutoConfig.from_pretrained(model_dir).save_pretrained(out_dir)
    try:
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
        return True
    except (OSError, ValueError, TypeError):
        return False


def export_onnx(model_dir, out_dir, task=None, atol=DEFAULT_ATOL, opset=None):
    """Export the model saved in `model_dir` to `out_dir/model.onnx` (+ config, tokenizer, report).

    Raises `FileNotFoundError` for a folder without config or weights, `ValueError` for an unknown
    task, and `OnnxParityError` (nothing written) when ONNX Runtime disagrees with PyTorch.
    """
    model, task = load_model(model_dir, task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / ONNX_FILE
    diff = export_model(model, onnx_path, task, atol, opset)
    copy_model_metadata(model_dir, out_dir)
    report = ExportReport(ONNX_FILE, task, opset_of(onnx_path), diff, atol)
    report.save(out_dir)
    return report


__all__ = [
    "TASKS",
    "OnnxParityError",
    "ExportReport",
    "export_onnx",
    "export_model",
    "trace_to_onnx",
    "load_model",
    "task_of",
    "load_session",
    "run_session",
    "eager_outputs",
    "max_abs_diff",
    "parity_batches",
    "random_padded_inputs",
]
