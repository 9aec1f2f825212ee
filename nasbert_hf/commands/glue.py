"""`nasbert glue`: fine-tune and evaluate a model on one GLUE task with `Trainer`."""

HELP = "Fine-tune a model on a GLUE task and write eval_results.json (Trainer; optional task distillation)."


def add_training_arguments(parser):
    """Flags shared by `nasbert glue` and `nasbert squad`; unset flags keep the config file's / defaults."""
    parser.add_argument("model", help="Folder or Hub name of the model to fine-tune (NasBert, BERT, ...).")
    parser.add_argument(
        "--output-dir", required=True, help="Folder for the fine-tuned model and results; not the model's own folder."
    )
    parser.add_argument("--config", help="YAML/JSON file with any recipe argument; flags given here override it.")
    parser.add_argument("--tokenizer", help="Tokenizer folder/name (default: the model's).")
    parser.add_argument("--teacher-model", help="A teacher fine-tuned on the same task: enables task distillation.")
    parser.add_argument("--distill-alpha", type=float, help="Weight of the teacher loss (default 0.5).")
    parser.add_argument("--distill-temperature", type=float, help="Softmax temperature of the soft loss (default 1).")
    parser.add_argument("--max-seq-length", type=int, help="Tokens per input.")
    parser.add_argument("--max-train-samples", type=int, help="Train on the first N examples only.")
    parser.add_argument("--max-eval-samples", type=int, help="Evaluate on the first N examples only.")
    parser.add_argument("--epochs", type=float, help="Training epochs (default 3).")
    parser.add_argument("--learning-rate", type=float, help="Peak learning rate (default 5e-5).")
    parser.add_argument("--batch-size", type=int, help="Batch size per device, training and evaluation (default 8).")
    parser.add_argument("--seed", type=int, help="Random seed (default 42).")
    parser.add_argument("--no-train", action="store_true", help="Only evaluate the model as it is.")
    parser.add_argument("--no-eval", action="store_true", help="Skip evaluation.")


def training_overrides(args):
    """Argument-dataclass fields set by the shared flags (None = not given)."""
    return {
        "model_name_or_path": args.model,
        "output_dir": args.output_dir,
        "tokenizer_name": args.tokenizer,
        "teacher_model": args.teacher_model,
        "distill_alpha": args.distill_alpha,
        "distill_temperature": args.distill_temperature,
        "max_seq_length": args.max_seq_length,
        "max_train_samples": args.max_train_samples,
        "max_eval_samples": args.max_eval_samples,
        "num_train_epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": args.batch_size,
        "seed": args.seed,
        "do_train": not args.no_train,
        "do_eval": not args.no_eval,
    }


def print_results(results, output_dir):
    scores = {key: value for key, value in results.items() if key.startswith("eval_") and not key.endswith(
        ("_runtime", "_per_second", "_samples", "_features"))}
    for key, value in sorted(scores.items()):
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    print(f"Results in {output_dir}/eval_results.json")


def add_arguments(parser):
    parser.add_argument("--task", required=True, help="cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli.")
    parser.add_argument("--data-dir", help="GLUE download folder (e.g. ../shared/data/glue); default: the Hub.")
    parser.add_argument("--predict", action="store_true", help="Also write GLUE submission TSVs for the test set(s).")
    add_training_arguments(parser)


def run(args):
    from ..finetune import GLUE_ARGUMENTS, parse_arguments, run_glue

    overrides = training_overrides(args)
    overrides.update(task_name=args.task, data_dir=args.data_dir, do_predict=args.predict or None)
    model_args, data_args, training_args = parse_arguments(GLUE_ARGUMENTS, config_file=args.config, overrides=overrides)
    print_results(run_glue(model_args, data_args, training_args), training_args.output_dir)
