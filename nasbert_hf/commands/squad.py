"""`nasbert squad`: fine-tune and evaluate a model on SQuAD v1.1 or v2.0 with `Trainer`."""

from .glue import add_training_arguments, parse_training_arguments, print_results

HELP = "Fine-tune a model on SQuAD v1.1/v2.0 and write eval_results.json (official EM/F1)."


def add_arguments(parser):
    from ..finetune import SQUAD_ARGUMENTS

    add_training_arguments(parser, SQUAD_ARGUMENTS)


def run(args):
    from ..finetune import SQUAD_ARGUMENTS, run_squad

    model_args, data_args, training_args = parse_training_arguments(args, SQUAD_ARGUMENTS)
    print_results(run_squad(model_args, data_args, training_args), training_args.output_dir)
