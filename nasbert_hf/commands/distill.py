"""`nasbert distill`: train an exported model further against the teacher on the corpus."""

HELP = "Distil an exported model from the teacher on the corpus (hidden states, soft MLM labels, MLM)."

# Short names for the main options; every field of DistillArguments is also `--field-name`.
ALIASES = {"output_dir": ["--out"]}


def add_arguments(parser):
    from ..arguments import add_dataclass_arguments
    from ..distill import DistillArguments

    parser.epilog = (
        "The distilled model replaces MODEL_DIR unless --out is given; checkpoints and log.jsonl go to --run-dir "
        "(default: OUT/../distill-runs/<name>). Several processes: "
        "torchrun --nproc_per_node N $(which nasbert) distill MODEL_DIR ... --cpu"
    )
    parser.add_argument("model", metavar="MODEL_DIR", help="Exported NasBert model folder (e.g. nasbert-out/nasbert-5M).")
    add_dataclass_arguments(parser, DistillArguments, aliases=ALIASES, skip=("model",))


def run(args):
    from ..arguments import given_values
    from ..distill import DistillArguments, distill

    output_dir = distill(DistillArguments(**given_values(args, DistillArguments)))
    print(f"Distilled model in {output_dir}; its nasbert.json `distillation` record holds the losses.")
