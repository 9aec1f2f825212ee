"""`nasbert supernet`: train the supernet (block-wise distillation + progressive shrinking)."""

import typing
from dataclasses import MISSING, fields

HELP = "Train the weight-sharing supernet by block-wise distillation from a teacher, shrinking the search space."

# Short names for the main options; every other field of SupernetTrainingArguments is `--field-name`.
ALIASES = {"output_dir": ["--out", "--output-dir"], "search_space": ["--config", "--search-space"]}


def add_arguments(parser):
    from ..supernet_training import SupernetTrainingArguments

    parser.epilog = (
        "--config takes a preset (tiny, base) or a YAML/JSON file; its `training` section sets the defaults, "
        "which flags override. Several processes: torchrun --standalone --nproc_per_node N -m nasbert_hf.cli supernet ... (--cpu for gloo)"
    )
    for field in fields(SupernetTrainingArguments):
        flags = ALIASES.get(field.name, ["--" + field.name.replace("_", "-")])
        help_text = field.metadata.get("help", "")
        if field.default is not MISSING and field.default is not None and field.type is not bool:
            help_text += f" (default: {field.default}, or the config's value)"
        if field.type is bool:
            parser.add_argument(*flags, dest=field.name, action="store_true", default=None, help=help_text)
        else:
            required = field.name == "output_dir"
            kind = _value_type(field.type)
            parser.add_argument(*flags, dest=field.name, type=kind, default=None, required=required, help=help_text)


def _value_type(annotation):
    arguments = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return arguments[0] if arguments else annotation


def run(args):
    from ..supernet_training import SupernetTrainingArguments, train_supernet

    values = {field.name: getattr(args, field.name) for field in fields(SupernetTrainingArguments)}
    config = values.pop("search_space") or "tiny"
    training = SupernetTrainingArguments.from_config(config, **values)
    run_dir = train_supernet(training)
    from accelerate import PartialState

    from ..folders import CANDIDATES_FILE
    from ..shrinking import read_candidates

    if PartialState().is_main_process:
        pools = read_candidates(run_dir / CANDIDATES_FILE)
        print(f"Supernet run written to {run_dir}: {', '.join(str(len(pool)) for pool in pools)} candidates per block")
