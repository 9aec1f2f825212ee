"""`nasbert report`: fine-tune a run's models and baselines on GLUE tasks; write a markdown table."""

HELP = "Fine-tune the exported models (and baselines) on GLUE tasks and write OUT/report.md."


def add_arguments(parser):
    parser.add_argument("out_dir", help="The folder `nasbert compress` wrote (e.g. nasbert-out).")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mrpc", "cola"], help="GLUE tasks (default: sst2 mrpc cola).")
    parser.add_argument("--data-dir", help="GLUE folder in the official layout (e.g. ../shared/data/glue); default: the Hub.")
    parser.add_argument("--baseline", dest="baselines", nargs="+", default=[], metavar="DIR",
                        help="Baseline model folders fine-tuned the same way (e.g. `nasbert convert` output).")
    parser.add_argument("--max-train-samples", type=int, default=2000, help="Training examples per task (default 2000; 0: all).")
    parser.add_argument("--max-eval-samples", type=int, help="Dev examples per task (default: all).")
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)


def run(args):
    from ..report import ReportArguments, report

    print(report(ReportArguments(
        out_dir=args.out_dir, tasks=args.tasks, data_dir=args.data_dir, baselines=args.baselines,
        max_train_samples=args.max_train_samples or None, max_eval_samples=args.max_eval_samples,
        max_seq_length=args.max_seq_length, epochs=args.epochs, learning_rate=args.learning_rate,
        batch_size=args.batch_size, seed=args.seed,
    )))
