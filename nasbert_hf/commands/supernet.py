"""`nasbert supernet`: train the supernet (block-wise distillation + progressive shrinking)."""

HELP = "Train the weight-sharing supernet by block-wise distillation from a teacher, shrinking the search space."

# Short names for the main options; every field of SupernetTrainingArguments is also `--field-name`.
ALIASES = {"output_dir": ["--out"], "search_space": ["--config"]}


def add_arguments(parser):
    from ..arguments import add_dataclass_arguments
    from ..supernet_training import SupernetTrainingArguments

    parser.epilog = (
        "--config takes a preset (tiny, small, base) or a YAML/JSON file; its `training` section sets the defaults, "
        "which flags override. Several processes: torchrun --standalone --nproc_per_node N -m nasbert_hf.cli supernet ... (--cpu for gloo)"
    )
    add_dataclass_arguments(parser, SupernetTrainingArguments, aliases=ALIASES, required=("output_dir",),
                            default_help=" (default: {}, or the config's value)")


def run(args):
    from ..arguments import given_values
    from ..supernet_training import SupernetTrainingArguments, train_supernet

    values = given_values(args, SupernetTrainingArguments)
    training = SupernetTrainingArguments.from_config(values.pop("search_space", "tiny"), **values)
    run_dir = train_supernet(training)
    from accelerate import PartialState

    from ..folders import CANDIDATES_FILE
    from ..shrinking import read_candidates

    if PartialState().is_main_process:
        pools = read_candidates(run_dir / CANDIDATES_FILE)
        print(f"Supernet run written to {run_dir}: {', '.join(str(len(pool)) for pool in pools)} candidates per block")
