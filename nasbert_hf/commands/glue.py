"""`nasbert glue`: fine-tune and evaluate a model on one GLUE task with `Trainer`."""

HELP = "Fine-tune a model on a GLUE task and write eval_results.json (Trainer; optional task distillation)."


# The short flags docs/finetuning.md documents, as aliases of the argument dataclasses' fields;
# every other field is a flag too, as in recipes/run_glue.py.
ALIASES = {"tokenizer_name": ["--tokenizer"], "num_train_epochs": ["--epochs"]}


def add_training_arguments(parser, dataclass_types, aliases=None):
    """The flags of `dataclass_types` (`GLUE_ARGUMENTS`, `SQUAD_ARGUMENTS`) for `nasbert glue` and
    `nasbert squad`; unset flags keep the config file's values, then the dataclasses' defaults."""
    from ..arguments import add_dataclass_arguments

    parser.add_argument("model_name_or_path", metavar="model",
                        help="Folder or Hub name of the model to fine-tune (NasBert, BERT, ...).")
    parser.add_argument("--config", help="YAML/JSON file with any recipe argument; flags given here override it.")
    parser.add_argument("--batch-size", type=int, help="Batch size per device, training and evaluation "
                                                       "(per_device_train_batch_size and per_device_eval_batch_size).")
    parser.add_argument("--no-train", dest="do_train", action="store_false", help="Only evaluate the model as it is.")
    parser.add_argument("--no-eval", dest="do_eval", action="store_false", help="Skip evaluation.")
    for dataclass_type in dataclass_types:
        add_dataclass_arguments(parser, dataclass_type, aliases={**ALIASES, **(aliases or {})},
                                skip=("model_name_or_path",), config_file_gives=True)
    # A command trains and evaluates unless told not to (the recipes' Trainer flags default to off).
    parser.set_defaults(do_train=True, do_eval=True)


def parse_training_arguments(args, dataclass_types):
    """The argument dataclasses from `--config` updated by the flags given."""
    from ..arguments import given_values
    from ..finetune import parse_arguments

    overrides = {name: value for kind in dataclass_types for name, value in given_values(args, kind).items()}
    if args.batch_size is not None:
        overrides.update(per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size)
    return parse_arguments(dataclass_types, config_file=args.config, overrides=overrides, required=("output_dir",))


def print_results(results, output_dir):
    scores = {key: value for key, value in results.items() if key.startswith("eval_") and not key.endswith(
        ("_runtime", "_per_second", "_samples", "_features"))}
    for key, value in sorted(scores.items()):
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    print(f"Results in {output_dir}/eval_results.json")


def add_arguments(parser):
    from ..finetune import GLUE_ARGUMENTS

    parser.add_argument("--predict", dest="do_predict", action="store_true", default=None,
                        help="Also write GLUE submission TSVs for the test set(s).")
    add_training_arguments(parser, GLUE_ARGUMENTS, aliases={"task_name": ["--task"]})


def run(args):
    from ..finetune import GLUE_ARGUMENTS, run_glue

    model_args, data_args, training_args = parse_training_arguments(args, GLUE_ARGUMENTS)
    print_results(run_glue(model_args, data_args, training_args), training_args.output_dir)
