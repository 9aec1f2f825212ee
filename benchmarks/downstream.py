"""NAS-BERT's claim at this machine's scale: searched models vs. uniform BERT-shaped baselines.

For every model `nasbert compress` exported into OUT, the baseline is the largest BERT-shaped
architecture of the same search space within the same parameter budget (alternating one `mha` and
one `ffn` choice at one hidden size, the shape `from_bert` gives), exported from the *same*
supernet and distilled with the *same* recipe and step budget. Then every model is fine-tuned the
same way on each GLUE task (`nasbert report`) and the table goes to OUT/report.md.

    python benchmarks/downstream.py nasbert-out --data-dir ../shared/data/glue
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_quality import uniform_within  # noqa: E402

from nasbert_hf.cost import ParamsCost  # noqa: E402
from nasbert_hf.distill import distill_exported, distilled_steps  # noqa: E402
from nasbert_hf.export import from_supernet, model_metadata, save_model_folder  # noqa: E402
from nasbert_hf.report import ReportArguments, model_folders, report  # noqa: E402
from nasbert_hf.search import Budget  # noqa: E402
from nasbert_hf.supernet import Supernet  # noqa: E402
from nasbert_hf.teacher import load_teacher  # noqa: E402


def export_baselines(out, run_dir):
    """`OUT/baselines/uniform-<name>/` for every exported model; returns their folders."""
    supernet, space, run_config = Supernet.from_run(run_dir)
    teacher = load_teacher(run_config["teacher"])
    folders = []
    for searched in model_folders(out):
        metadata = json.loads((searched / "nasbert.json").read_text())
        budget = Budget.parse(metadata["budget"]).limit  # the same budget the search had
        shapes = uniform_within(space, budget)
        if not shapes:
            print(f"{metadata['name']}: no BERT-shaped architecture fits {budget} parameters; no baseline.")
            continue
        arch = max(shapes, key=lambda a: (ParamsCost().cost(a), str(a)))
        name = f"uniform-{metadata['name'].removeprefix('nasbert-')}"
        folder = out / "baselines" / name
        if not (folder / "nasbert.json").is_file():
            model = from_supernet(supernet, arch, teacher)
            record = model_metadata(name, arch, model.config, teacher=run_config["teacher"],
                                    corpus=metadata.get("corpus"), baseline_for=metadata["name"])
            save_model_folder(model, teacher.tokenizer, record, folder)
        folders.append(folder)
    return folders, run_config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mrpc", "cola"])
    parser.add_argument("--max-train-samples", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    args = parser.parse_args()

    out = Path(args.out_dir)
    baselines, run_config = export_baselines(out, out / "supernet-run")
    steps = max(distilled_steps(folder) for folder in model_folders(out))
    if steps:
        distill_exported(out / "baselines", [b.name for b in baselines], steps, corpus=run_config.get("corpus"),
                         seq_len=run_config["seq_len"], seed=run_config["seed"], supernet_run=str(out / "supernet-run"),
                         num_blocks=run_config["search_space"]["num_blocks"])
    print(f"Searched models and baselines distilled for {steps} steps each.\n")
    print(report(ReportArguments(out_dir=str(out), tasks=args.tasks, data_dir=args.data_dir,
                                 baselines=[str(b) for b in baselines], max_train_samples=args.max_train_samples,
                                 epochs=args.epochs, learning_rate=args.learning_rate)))


if __name__ == "__main__":
    main()
