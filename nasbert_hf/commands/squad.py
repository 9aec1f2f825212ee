"""`nasbert squad`: fine-tune and evaluate a model on SQuAD v1.1 or v2.0 with `Trainer`."""

from .glue import add_training_arguments, print_results, training_overrides

HELP = "Fine-tune a model on SQuAD v1.1/v2.0 and write eval_results.json (official EM/F1)."


def add_arguments(parser):
    parser.add_argument("--version", choices=("1.1", "2.0"), help="SQuAD version (default 1.1).")
    parser.add_argument("--data-dir", help="Folder with train-vX.json and dev-vX.json (e.g. ../shared/data/squad).")
    parser.add_argument("--train-file", help="SQuAD JSON to train on (overrides --data-dir).")
    parser.add_argument("--validation-file", help="SQuAD JSON to evaluate on (overrides --data-dir).")
    parser.add_argument("--doc-stride", type=int, help="Token overlap between windows of a long context (default 128).")
    parser.add_argument("--null-score-diff-threshold", type=float, help="v2.0: threshold for answering '' (default 0).")
    add_training_arguments(parser)


def run(args):
    from ..finetune import SQUAD_ARGUMENTS, parse_arguments, run_squad

    overrides = training_overrides(args)
    overrides.update(
        version=args.version, data_dir=args.data_dir, train_file=args.train_file,
        validation_file=args.validation_file, doc_stride=args.doc_stride,
        null_score_diff_threshold=args.null_score_diff_threshold,
    )
    model_args, data_args, training_args = parse_arguments(
        SQUAD_ARGUMENTS, config_file=args.config, overrides=overrides
    )
    print_results(run_squad(model_args, data_args, training_args), training_args.output_dir)
