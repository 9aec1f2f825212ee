"""`nasbert export-onnx`: ONNX export checked against PyTorch, optional int8, accuracy on a dev set."""

HELP = "Export a saved model to ONNX (checked with ONNX Runtime), optionally int8-quantised."


def add_arguments(parser):
    from ..export_onnx import DEFAULT_ATOL, TASKS

    parser.add_argument("model_dir", help="Folder written by save_pretrained (config.json + model.safetensors).")
    parser.add_argument("--out", required=True, help="Folder for model.onnx, the config, tokenizer and report.")
    parser.add_argument(
        "--task", choices=list(TASKS), default=None, help="Head to export (default: the saved model's head)."
    )
    parser.add_argument(
        "--quantize", choices=["int8"], default=None,
        help="Also write model_int8.onnx (ONNX Runtime dynamic int8) and compare torch.ao dynamic int8.",
    )
    parser.add_argument(
        "--dev-data", default=None,
        help="A GLUE task folder (e.g. ../shared/data/glue/SST-2): report dev accuracy of every backend "
        "(sequence-classification models fine-tuned on that task).",
    )
    parser.add_argument("--glue-task", default=None, help="GLUE task of --dev-data (default: the folder name).")
    parser.add_argument("--max-length", type=int, default=128, help="Token limit for --dev-data (default 128).")
    parser.add_argument(
        "--atol", type=float, default=DEFAULT_ATOL,
        help=f"Largest |ONNX Runtime - PyTorch| accepted (default {DEFAULT_ATOL:g}).",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's).")


def run(args):
    from dataclasses import asdict
    from pathlib import Path

    from transformers import AutoConfig

    from ..export_onnx import ONNX_FILE, export_onnx, load_model, task_of
    from ..folders import check_model_dir, check_model_weights

    # Check every argument before the (slow) export.
    check_model_dir(args.model_dir, model_type=None)
    check_model_weights(args.model_dir)
    task = args.task or task_of(AutoConfig.from_pretrained(args.model_dir))
    tokenizer = _check_dev_data(args, task) if args.dev_data is not None else None
    report = export_onnx(args.model_dir, args.out, task, args.atol, args.opset)
    print(f"Wrote {Path(args.out) / report.onnx_file} ({report.task}, opset {report.opset}): "
          f"max |ONNX Runtime - PyTorch| = {report.max_abs_diff:.2e} (< {report.atol:g}) on random padded batches")
    if args.quantize is None and args.dev_data is None:
        return 0
    model, _ = load_model(args.model_dir, report.task)
    fp32_path = Path(args.out) / ONNX_FILE
    backends = {"torch-fp32": model, "onnx-fp32": fp32_path}
    if args.quantize == "int8":
        report.int8, int8_backends = _quantize(model, report.task, fp32_path, args.dev_data is not None)
        backends.update(int8_backends)
    if args.dev_data is not None:
        accuracy = _dev_accuracy(backends, tokenizer, args)
        report.dev = asdict(accuracy)
        print(accuracy.to_markdown())
    report.save(args.out)
    return 0


def _quantize(model, task, fp32_path, has_dev_data):
    from ..quantization import INT8_ONNX_FILE, int8_error, quantize_onnx, quantize_torch

    int8_path = quantize_onnx(fp32_path, fp32_path.with_name(INT8_ONNX_FILE))
    torch_int8 = quantize_torch(model)
    # On random tokens a trained classifier's logits sit near its decision boundary, where int8's
    # small shifts are large relative errors: this number shows that int8 runs, not how accurate
    # it is. The dev-set accuracy (--dev-data) is the measure that counts.
    errors = int8_error(model, task, onnx_int8=int8_path, torch_int8=torch_int8)
    sizes = {name: path.stat().st_size / 2**20 for name, path in (("fp32", fp32_path), ("int8", int8_path))}
    print(f"Wrote {int8_path} ({sizes['int8']:.1f} MiB vs {sizes['fp32']:.1f} MiB fp32); relative L2 error vs "
          f"fp32 on random tokens: ONNX Runtime {errors['onnx']:.3f}, torch.ao {errors['torch']:.3f}")
    if not has_dev_data:
        print("note: pass --dev-data (e.g. ../shared/data/glue/SST-2) to measure int8's accuracy change.")
    summary = {"onnx_file": int8_path.name, "relative_error_random_tokens": errors, "size_mib": sizes}
    return summary, {"torch-int8": torch_int8, "onnx-int8": int8_path}


def _check_dev_data(args, task):
    """Validate --dev-data before exporting; returns the model's tokenizer."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from ..glue import get_task

    if not Path(args.dev_data).is_dir():
        raise FileNotFoundError(f"--dev-data {args.dev_data} is not a folder; pass a GLUE task folder.")
    if task != "sequence-classification":
        raise ValueError(f"--dev-data needs a sequence-classification model; this export is {task!r}.")
    get_task(args.glue_task or Path(args.dev_data).name)  # ValueError listing the valid tasks
    try:
        return AutoTokenizer.from_pretrained(args.model_dir)
    except (OSError, ValueError, TypeError) as error:
        raise FileNotFoundError(f"--dev-data needs a tokenizer saved in {args.model_dir} ({error}).") from error


def _dev_accuracy(backends, tokenizer, args):
    from ..quantization import compare_accuracy, onnx_predictor, torch_predictor

    predictors = {
        name: onnx_predictor(backend) if name.startswith("onnx") else torch_predictor(backend)
        for name, backend in backends.items()
    }
    return compare_accuracy(predictors, tokenizer, args.dev_data, args.glue_task, max_length=args.max_length)
