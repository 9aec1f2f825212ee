"""`nasbert compress`: the main job, teacher + corpus -> a folder of named, loadable models."""

from pathlib import Path

from .search import add_selection_arguments

HELP = "Compress a BERT into a family of small models, one per budget (supernet, search, export)."


def add_arguments(parser):
    parser.add_argument("--teacher", help="Teacher folder or Hub name (default: the embedded all-MiniLM-L6-v2).")
    parser.add_argument("--corpus", help="Text files/folder/glob (.txt, .txt.gz) or a datasets name "
                                         "(default: the embedded Wikipedia sample).")
    parser.add_argument("--config", default="tiny", help="Search-space preset (tiny, base) or a YAML/JSON file.")
    parser.add_argument("--out", default="nasbert-out", help="Output folder (default: ./nasbert-out).")
    parser.add_argument("--max-steps", type=int, help="Supernet training steps (default: the config's).")
    parser.add_argument("--seed", type=int, help="Seed (default: the config's).")
    add_selection_arguments(parser)
    parser.add_argument("--distill-steps", type=int, help="Distillation steps for every exported model, 0 for none "
                                                          "(default: the config's `distill` section).")
    parser.add_argument("--cpu", action="store_true", default=None, help="Train on CPU even when a GPU is present.")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], help="Mixed precision on GPU.")
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
    from ..pipeline import RUN_SUBDIR, SearchArguments, compress, format_summary
    from ..search_space import read_config
    from ..supernet_training import SupernetTrainingArguments

    out = Path(args.out)
    training = SupernetTrainingArguments.from_config(
        args.config, output_dir=str(out / RUN_SUBDIR), teacher=args.teacher, corpus=args.corpus,
        max_steps=args.max_steps, seed=args.seed, cpu=args.cpu, mixed_precision=args.mixed_precision,
    )
    searching = SearchArguments(run_dir=str(out / RUN_SUBDIR), budgets=args.budgets, out=str(out), top_k=args.top_k,
                                 min_budget_use=args.min_budget_use)
    distill_steps, distilling = distill_settings(read_config(args.config), args.distill_steps)
    summary = compress(training, searching, install=args.install, distill_steps=distill_steps, distill_options=distilling)
    print(format_summary(summary))
    print(f"\n{len(summary['models'])} models in {out}/ (summary.json, pareto.png); load one with "
          f"AutoModel.from_pretrained('{out / summary['models'][0]['name']}') after `import nasbert_hf`.")
