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
    from pathlib import Path

    from transformers import AutoConfig

    from ..export_onnx import export_onnx, task_of
    from ..folders import check_model_dir, check_model_weights
    from ..quantization import AccuracyReport, check_dev_data, quantize_and_score

    # Check every argument before the (slow) export.
    check_model_dir(args.model_dir, model_type=None)
    check_model_weights(args.model_dir)
    task = args.task or task_of(AutoConfig.from_pretrained(args.model_dir))
    tokenizer = None if args.dev_data is None else check_dev_data(args.model_dir, args.dev_data, task, args.glue_task)
    report = export_onnx(args.model_dir, args.out, task, args.atol, args.opset)
    print(f"Wrote {Path(args.out) / report.onnx_file} ({report.task}, opset {report.opset}): "
          f"max |ONNX Runtime - PyTorch| = {report.max_abs_diff:.2e} (< {report.atol:g}) on random padded batches")
    if args.quantize is None and args.dev_data is None:
        return 0
    report = quantize_and_score(args.model_dir, args.out, report, args.quantize, args.dev_data, tokenizer,
                                args.glue_task, args.max_length)
    if report.int8 is not None:
        _print_int8(report.int8, Path(args.out), has_dev_data=args.dev_data is not None)
    if report.dev is not None:
        print(AccuracyReport(**report.dev).to_markdown())
    return 0


def _print_int8(int8, out, has_dev_data):
    sizes, errors = int8["size_mib"], int8["relative_error_random_tokens"]
    print(f"Wrote {out / int8['onnx_file']} ({sizes['int8']:.1f} MiB vs {sizes['fp32']:.1f} MiB fp32); relative L2 "
          f"error vs fp32 on random tokens: ONNX Runtime {errors['onnx']:.3f}, torch.ao {errors['torch']:.3f}")
    if not has_dev_data:
        print("note: pass --dev-data (e.g. ../shared/data/glue/SST-2) to measure int8's accuracy change.")
