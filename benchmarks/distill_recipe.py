"""Where final distillation pays: the same searched architectures, distilled with other steps or loss weights.

For each model of a finished `nasbert compress` folder (default: all) and each variant
(`STEPS` or `STEPS:field=value,...` with `DistillArguments` fields, e.g. `300:mlm_weight=0`), the
architecture is exported again from the same supernet (the weights the main job starts its
distillation from), distilled with the main job's options changed by the variant, and fine-tuned
with the quality benchmark's recipe (`benchmarks/quality.py`) on each task and seed. The variant
that equals the main job (its steps, no change) is the family's folder itself, and its fine-tuning
results are the quality benchmark's where it ran with the same recipe (`nasbert report` reuses
results whose settings and weights match). Results: OUT/distill-recipe/distill_recipe.md and .json.

    python benchmarks/distill_recipe.py OUT --variants 60 300 60:mlm_weight=0 300:mlm_weight=0 \\
        --models nasbert-5M --data-dir ../shared/data/glue --tasks sst2 mrpc
"""

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import yaml

from quality import add_recipe_arguments, distill_options, fmt, log, mean_std, read, recipe_arguments, run_folder

from nasbert_hf.architecture import Architecture
from nasbert_hf.distill import distill_exported, distilled_steps
from nasbert_hf.export import from_supernet, model_metadata, save_model_folder
from nasbert_hf.folders import write_json
from nasbert_hf.report import finetune, headline
from nasbert_hf.supernet import Supernet
from nasbert_hf.teacher import load_teacher


def parse_variant(text):
    """`"300:mlm_weight=0"` -> `(300, {"mlm_weight": 0.0})`."""
    steps, _, changes = text.partition(":")
    pairs = [change.split("=", 1) for change in changes.split(",") if change]
    return int(steps), {key: yaml.safe_load(value) for key, value in pairs}


def model_at(variant, meta, out, work, supernet, teacher, run_config, options):
    """The folder of `meta`'s architecture distilled as `variant` says (made if needed), and the distillation time."""
    steps, changes = parse_variant(variant)
    if distilled_steps(out / meta["name"]) == steps and not changes:
        return out / meta["name"], None
    name = f"{meta['name']}-distill{variant.replace(':', '-').replace('=', '').replace(',', '-')}"
    folder = work / name
    if not (folder / "nasbert.json").is_file():
        arch = Architecture.parse(meta["architecture"])
        model = from_supernet(supernet, arch, teacher)
        record = model_metadata(name, arch, model.config, teacher=run_config["teacher"], budget=meta["budget"])
        save_model_folder(model, teacher.tokenizer, record, folder)
    start = time.time()
    distill_exported(work, [name], steps, supernet_run=str(out / "supernet-run"), **{**options, **changes})
    return folder, time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="A finished `nasbert compress` folder.")
    parser.add_argument("--variants", nargs="+", default=["60", "300", "60:mlm_weight=0", "300:mlm_weight=0"])
    parser.add_argument("--models", nargs="+", help="Family members to test (default: all).")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mrpc"])
    add_recipe_arguments(parser)  # the quality benchmark's recipe, so that its results are reused
    args = parser.parse_args()

    out = Path(args.out_dir)
    work = out / "distill-recipe"
    summary = read(out / "summary.json")
    family = [read(out / m["name"] / "nasbert.json") for m in summary["models"]
              if not args.models or m["name"] in args.models]
    supernet, space, run_config = Supernet.from_run(out / "supernet-run")
    teacher = load_teacher(run_config["teacher"])
    options = {**distill_options(), "num_blocks": space.num_blocks}
    recipe = recipe_arguments(args, out)
    rows = []
    for meta in family:
        for variant in args.variants:
            folder, seconds = model_at(variant, meta, out, work, supernet, teacher, run_config, options)
            distillation = read(folder / "nasbert.json")["distillation"]
            scores = {task: [] for task in args.tasks}
            for seed in args.seeds:
                for task in args.tasks:
                    results_dir = run_folder(out / "quality" if folder.parent == out else work, folder.name, task,
                                             recipe.learning_rate, seed)
                    scores[task].append(headline(task, finetune(folder, task, replace(recipe, seed=seed), results_dir)))
                    log(f"{folder.name} {task} seed {seed}: {scores[task][-1]:.1f}")
            averages = [statistics.mean(values) for values in zip(*scores.values())]
            rows.append({"model": meta["name"], "variant": variant, "folder": str(folder), "distill_seconds": seconds,
                         "validation_before": distillation.get("validation_before"),
                         "validation_after": distillation["validation_after"], "scores": scores,
                         "average": mean_std(averages)})
    write_json(work / "distill_recipe.json", rows)

    def loss(record, key, digits):
        return f"{record[key]:.{digits}f}" if isinstance(record.get(key), float) else "-"

    lines = [f"Recipe: {args.max_train_samples} examples, seq {args.max_seq_length}, {args.epochs:g} epochs, "
             f"lr {args.learning_rate:g}, batch {args.batch_size}, seeds {' '.join(map(str, args.seeds))}; "
             "dev scores x100, mean ± std. Validation after distillation: hidden-state MSE and student MLM loss.", "",
             "| model | distillation (steps:changes) | hidden MSE | MLM | " + " | ".join(args.tasks) + " | average |",
             "|---|---|---|---|" + "---|" * len(args.tasks) + "---|"]
    for row in rows:
        after = row["validation_after"]
        lines.append(f"| {row['model']} | {row['variant']} | {loss(after, 'hidden', 4)} | "
                     f"{loss(after, 'mlm', 2)} | " +
                     " | ".join(fmt(mean_std(row["scores"][t])) for t in args.tasks) +
                     f" | **{fmt(row['average'])}** |")
    (work / "distill_recipe.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
