"""`nasbert compress`: the main job, teacher + corpus -> a folder of named, loadable models."""

from pathlib import Path

from .search import add_selection_arguments, selection_values

HELP = "Compress a BERT into a family of small models, one per budget (supernet, search, export)."

# The SupernetTrainingArguments worth a flag here; a config file sets any of them.
TRAINING = ("teacher", "corpus", "max_steps", "seed", "cpu", "mixed_precision")


def add_arguments(parser):
    from ..arguments import add_dataclass_arguments
    from ..supernet_training import SupernetTrainingArguments

    parser.add_argument("--config", default="tiny", help="Search-space preset (tiny, small, base) or a YAML/JSON file.")
    parser.add_argument("--out", default="nasbert-out", help="Output folder (default: ./nasbert-out).")
    add_dataclass_arguments(parser, SupernetTrainingArguments, only=TRAINING,
                            default_help=" (default: {}, or the config's value)")
    add_selection_arguments(parser)
    parser.add_argument("--distill-steps", type=int, help="Distillation steps for every exported model, 0 for none "
                                                          "(default: the config's `distill` section).")
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="Do not install the models in the local zoo (by default they are, so that "
                             "from_pretrained('nasbert-5M') loads them by name).")


def distill_settings(config, distill_steps=None):
    """`(steps, options)` for `distill_exported` from a config's `distill` section: its `max_steps`
    is the default number of steps (`--distill-steps` overrides it) and never one of the options."""
    from ..distill import check_distill_options

    section = config.get("distill") or {}
    if not isinstance(section, dict):
        raise ValueError(f"The config's `distill` section must be a mapping of DistillArguments, got {section!r}.")
    options = dict(section)
    steps = options.pop("max_steps", 0) if distill_steps is None else distill_steps
    options.pop("max_steps", None)
    if steps < 0:
        raise ValueError(f"--distill-steps={steps} must be 0 (no distillation) or more.")
    check_distill_options(options)  # now, not after the supernet has trained
    return steps, options


def run(args):
    from ..arguments import given_values, read_config
    from ..pipeline import RUN_SUBDIR, SearchArguments, compress, format_summary
    from ..supernet_training import SupernetTrainingArguments

    out = Path(args.out)
    training = SupernetTrainingArguments.from_config(
        args.config, output_dir=str(out / RUN_SUBDIR), **given_values(args, SupernetTrainingArguments)
    )
    searching = SearchArguments(run_dir=str(out / RUN_SUBDIR), out=str(out), **selection_values(args))
    distill_steps, distilling = distill_settings(read_config(args.config), args.distill_steps)
    summary = compress(training, searching, install=args.install, distill_steps=distill_steps, distill_options=distilling)
    print(format_summary(summary))
    print(f"\n{len(summary['models'])} models in {out}/ (summary.json, pareto.png); load one with "
          f"AutoModel.from_pretrained('{out / summary['models'][0]['name']}') after `import nasbert_hf`.")
