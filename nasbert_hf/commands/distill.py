"""`nasbert distill`: train an exported model further against the teacher on the corpus."""

import typing
from dataclasses import MISSING, fields

HELP = "Distil an exported model from the teacher on the corpus (hidden states, soft MLM labels, MLM)."

# Short names for the main options; every other field of DistillArguments is `--field-name`.
ALIASES = {"output_dir": ["--out", "--output-dir"]}


def add_arguments(parser):
    from ..distill import DistillArguments

    parser.epilog = (
        "The distilled model replaces MODEL_DIR unless --out is given; checkpoints and log.jsonl go to --run-dir "
        "(default: OUT/../distill-runs/<name>). Several processes: "
        "torchrun --nproc_per_node N $(which nasbert) distill MODEL_DIR ... --cpu"
    )
    parser.add_argument("model", metavar="MODEL_DIR", help="Exported NasBert model folder (e.g. nasbert-out/nasbert-5M).")
    for field in fields(DistillArguments):
        if field.name == "model":
            continue
        flags = ALIASES.get(field.name, ["--" + field.name.replace("_", "-")])
        help_text = field.metadata.get("help", "")
        if field.type is bool:
            parser.add_argument(*flags, dest=field.name, action="store_true", help=help_text)
            continue
        if field.default is not MISSING and field.default is not None:
            help_text += f" (default: {field.default})"
        parser.add_argument(*flags, dest=field.name, type=_value_type(field.type), default=field.default, help=help_text)


def _value_type(annotation):
    arguments = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return arguments[0] if arguments else annotation


def run(args):
    from ..distill import DistillArguments, distill

    output_dir = distill(DistillArguments(**{field.name: getattr(args, field.name) for field in fields(DistillArguments)}))
    print(f"Distilled model in {output_dir}; its nasbert.json `distillation` record holds the losses.")
