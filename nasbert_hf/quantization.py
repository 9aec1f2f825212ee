"""Dynamic int8 quantisation for deployment, and what it costs in accuracy.

Two paths, both *dynamic* (int8 weights, activations quantised on the fly per batch, no
calibration data):
- ONNX Runtime: `quantize_onnx` runs ORT's `quantize_dynamic` on an exported graph (MatMul
  weights and the embedding tables become int8; convolutions stay float).
- eager PyTorch: `quantize_torch` applies `torch.ao.quantization.quantize_dynamic` to every
  `nn.Linear`.

`int8_error` measures the deviation from float32 on random inputs (the tests hold it under
`INT8_TOLERANCE`), and `compare_accuracy` reports the accuracy of each path on a real GLUE dev set.
"""

import copy
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .export_onnx import ONNX_FILE, eager_outputs, load_model, load_session, parity_batches, run_session
from .folders import atomic_path, temporary_path

# Bound on `relative_error` (int8 vs fp32, relative L2) of a *random-weight* model on the random
# padded parity batches, which the tests hold. Measured 0.007-0.041 for ONNX Runtime and
# 0.0003-0.134 for torch.ao (7-bit activations) at hidden sizes 32-512 (docs/deployment.md); a
# broken quantisation gives ~1. A trained classifier's logits on random tokens sit near its
# decision boundary and give larger numbers: judge those by dev-set accuracy (`compare_accuracy`).
INT8_TOLERANCE = 0.2
INT8_ONNX_FILE = "model_int8.onnx"


def quantize_onnx(onnx_path, out_path):
    """Dynamically quantise the ONNX model `onnx_path` to int8 weights; writes `out_path` atomically."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    load_session(onnx_path)  # a clear error for a missing or corrupted input
    out_path = Path(out_path)
    prepared = temporary_path(out_path.with_name(f"{out_path.name}.pre"))
    root = logging.getLogger()
    level = root.level
    try:
        # The quantiser re-runs ONNX shape inference and fails on any stale intermediate shape
        # annotation (torch 2.11's exporter left some); drop them, they are only hints. The
        # exporter has already folded every weight into a constant, which is what the quantiser needs.
        model = onnx.load(str(onnx_path))
        del model.graph.value_info[:]
        onnx.save(model, str(prepared))
        root.setLevel(logging.ERROR)  # the quantiser logs advice (pre-processing) through the root logger
        # Convolutions stay float: ORT's ConvInteger has no fast depthwise kernel (12% of the int8
        # run time of a 2-conv model, more than all its float convs), and depthwise weights are tiny.
        ops = [op for op in IntegerOpsRegistry if op != "Conv"]
        with atomic_path(out_path) as temporary:
            quantize_dynamic(str(prepared), str(temporary), weight_type=QuantType.QInt8, op_types_to_quantize=ops)
            load_session(temporary)
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)
    return out_path


def quantize_torch(model):
    """A copy of `model` with every `nn.Linear` dynamically quantised to int8 (`torch.ao`), for CPU.

    NasBert's `sliced_linear` calls a full-width layer as a module, so the quantised modules run.
    """
    with warnings.catch_warnings():
        # torch.ao's quantised tensors carry a deprecation notice in favour of torchao, which is
        # not a dependency; the dynamic-int8 kernels are still the ones PyTorch ships.
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), {torch.nn.Linear}, dtype=torch.qint8
        )
    return quantized


def relative_error(reference, candidate):
    """||candidate - reference|| / ||reference|| (L2 over the whole output)."""
    return float(np.linalg.norm(candidate - reference) / max(np.linalg.norm(reference), 1e-12))


def int8_error(model, task, onnx_int8=None, torch_int8=None):
    """`relative_error` of each int8 model against float32 `model`, worst over outputs and batches.

    `onnx_int8` is a path or session, `torch_int8` a quantised model; returns
    `{"onnx": ..., "torch": ...}` for the ones given.
    """
    if isinstance(onnx_int8, (str, Path)):
        onnx_int8 = load_session(onnx_int8)
    errors = {}
    for inputs in parity_batches(model):
        reference = eager_outputs(model, task, *inputs)
        candidates = {}
        if onnx_int8 is not None:
            candidates["onnx"] = run_session(onnx_int8, *(tensor.numpy() for tensor in inputs))
        if torch_int8 is not None:
            candidates["torch"] = eager_outputs(torch_int8, task, *inputs)
        for backend, outputs in candidates.items():
            worst = max(relative_error(reference[name], outputs[name]) for name in reference)
            errors[backend] = max(errors.get(backend, 0.0), worst)
    return errors


# --- accuracy on a real dev set ---------------------------------------------------------------


def torch_predictor(model):
    def predict(input_ids, attention_mask, token_type_ids):
        with torch.no_grad():
            return model(
                input_ids=torch.as_tensor(input_ids),
                attention_mask=torch.as_tensor(attention_mask),
                token_type_ids=torch.as_tensor(token_type_ids),
            ).logits.float().numpy()

    return predict


def onnx_predictor(session):
    if isinstance(session, (str, Path)):
        session = load_session(session)
    return lambda input_ids, attention_mask, token_type_ids: run_session(
        session, input_ids, attention_mask, token_type_ids
    )["logits"]


@dataclass
class AccuracyReport:
    """Dev-set accuracy of each backend, and how often each agrees with the float32 PyTorch model."""

    task: str
    examples: int
    accuracy: dict  # backend name -> accuracy
    agreement: dict  # backend name -> fraction of predictions equal to the reference's
    reference: str = "torch-fp32"

    def change(self, backend):
        return self.accuracy[backend] - self.accuracy[self.reference]

    def to_markdown(self):
        lines = [
            f"GLUE {self.task} dev, {self.examples} examples:",
            "",
            "| backend | accuracy | change | agreement with fp32 |",
            "|---|---:|---:|---:|",
        ]
        for backend, accuracy in self.accuracy.items():
            lines.append(
                f"| {backend} | {accuracy:.4f} | {self.change(backend):+.4f} | {self.agreement[backend]:.4f} |"
            )
        return "\n".join(lines)


def load_dev_set(data_dir, task=None):
    """`(task, dataset)`: the validation split of a local GLUE task folder, e.g. `../shared/data/glue/SST-2`.

    The task defaults to the folder's name (`SST-2` -> `sst2`).
    """
    from .glue import get_task, load_glue_split

    glue_task = get_task(task or Path(data_dir).name)
    if glue_task.is_regression:
        raise ValueError(f"GLUE {glue_task.name} is a regression task; accuracy needs a classification task.")
    return glue_task, load_glue_split(glue_task, glue_task.validation_splits[0], data_dir)


def _batches(dataset, glue_task, tokenizer, batch_size, max_length):
    columns = [f"sentence{i + 1}" for i in range(len(glue_task.text_columns))]
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        encoded = tokenizer(
            *(rows[column] for column in columns), truncation=True, max_length=max_length, padding=True,
            return_tensors="np", return_token_type_ids=True,
        )
        yield encoded, np.asarray(rows["label"])


def compare_accuracy(predictors, tokenizer, data_dir, task=None, batch_size=64, max_length=128, max_examples=None):
    """An `AccuracyReport` of each `{name: predict(input_ids, attention_mask, token_type_ids) -> logits}`
    on the dev set in `data_dir` (its first `max_examples` rows if given); the first predictor is the
    reference for `change` and `agreement`."""
    glue_task, dataset = load_dev_set(data_dir, task)
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    predictions = {name: [] for name in predictors}
    labels = []
    for encoded, batch_labels in _batches(dataset, glue_task, tokenizer, batch_size, max_length):
        labels.append(batch_labels)
        for name, predict in predictors.items():
            logits = predict(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"])
            if logits.shape[-1] != glue_task.num_labels:
                raise ValueError(
                    f"Backend {name!r} gives {logits.shape[-1]} logits but GLUE {glue_task.name} has "
                    f"{glue_task.num_labels} labels; use a model fine-tuned on {glue_task.name}."
                )
            predictions[name].append(logits.argmax(-1))
    labels = np.concatenate(labels)
    predictions = {name: np.concatenate(values) for name, values in predictions.items()}
    reference = next(iter(predictions))
    return AccuracyReport(
        task=glue_task.name,
        examples=len(labels),
        accuracy={name: float((values == labels).mean()) for name, values in predictions.items()},
        agreement={name: float((values == predictions[reference]).mean()) for name, values in predictions.items()},
        reference=reference,
    )


# ---------------------------------------------------------------------------------------------
# The workflow of `nasbert export-onnx --quantize int8 --dev-data DIR`, after `export_onnx`
# ---------------------------------------------------------------------------------------------


def check_dev_data(model_dir, dev_data, task, glue_task=None):
    """Validate a GLUE dev folder for a model of `task` before the (slow) export; returns the model's
    tokenizer. The messages name the command's flags (`--dev-data`), where the values come from."""
    from transformers import AutoTokenizer

    from .glue import get_task

    if not Path(dev_data).is_dir():
        raise FileNotFoundError(f"--dev-data {dev_data} is not a folder; pass a GLUE task folder.")
    if task != "sequence-classification":
        raise ValueError(f"--dev-data needs a sequence-classification model; this export is {task!r}.")
    get_task(glue_task or Path(dev_data).name)  # ValueError listing the valid tasks
    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError) as error:
        raise FileNotFoundError(f"--dev-data needs a tokenizer saved in {model_dir} ({error}).") from error


def quantize_int8(model, task, fp32_path):
    """Write `model_int8.onnx` beside the float32 graph and quantise `model` with torch.ao; returns
    `(summary, backends)`: the report's `int8` record and `{"torch-int8": ..., "onnx-int8": path}`."""
    int8_path = quantize_onnx(fp32_path, fp32_path.with_name(INT8_ONNX_FILE))
    torch_int8 = quantize_torch(model)
    # On random tokens a trained classifier's logits sit near its decision boundary, where int8's
    # small shifts are large relative errors: this number shows that int8 runs, not how accurate
    # it is. The dev-set accuracy is the measure that counts.
    errors = int8_error(model, task, onnx_int8=int8_path, torch_int8=torch_int8)
    sizes = {name: path.stat().st_size / 2**20 for name, path in (("fp32", fp32_path), ("int8", int8_path))}
    summary = {"onnx_file": int8_path.name, "relative_error_random_tokens": errors, "size_mib": sizes}
    return summary, {"torch-int8": torch_int8, "onnx-int8": int8_path}


def quantize_and_score(model_dir, out_dir, report, quantize=None, dev_data=None, tokenizer=None, glue_task=None,
                       max_length=128):
    """After `export_onnx(model_dir, out_dir)` wrote `report`: with `quantize="int8"` write the int8
    graph and fill `report.int8`; with `dev_data` (a GLUE task folder, checked by `check_dev_data`,
    which gives `tokenizer`) score every backend on it and fill `report.dev`. Saves and returns the
    report; its `dev` record is an `AccuracyReport` as a dict."""
    model, _ = load_model(model_dir, report.task)
    fp32_path = Path(out_dir) / ONNX_FILE
    backends = {"torch-fp32": model, "onnx-fp32": fp32_path}
    if quantize == "int8":
        report.int8, int8_backends = quantize_int8(model, report.task, fp32_path)
        backends.update(int8_backends)
    if dev_data is not None:
        predictors = {
            name: onnx_predictor(backend) if name.startswith("onnx") else torch_predictor(backend)
            for name, backend in backends.items()
        }
        report.dev = asdict(compare_accuracy(predictors, tokenizer, dev_data, glue_task, max_length=max_length))
    report.save(out_dir)
    return report


__all__ = [
    "INT8_TOLERANCE",
    "quantize_onnx",
    "quantize_torch",
    "relative_error",
    "int8_error",
    "torch_predictor",
    "onnx_predictor",
    "AccuracyReport",
    "load_dev_set",
    "compare_accuracy",
    "check_dev_data",
    "quantize_int8",
    "quantize_and_score",
]
