"""Label-free retention: how much of the teacher each model keeps (`nasbert_hf/retention.py`).

For a finished `nasbert compress` folder OUT (and, with `--compare`, other such folders, e.g. a
family made by an earlier version), it scores:

- the teacher (100 on the corpus pairs by definition; its zero-shot MRPC AUC is the ceiling);
- every model of each family, as the family folder holds it (distilled by the main job);
- for every budget of OUT, the `slice` baseline: the teacher's first and last layers and evenly
  spaced ones between, as many as fit the budget with the factorised word table at the widest
  embedding size of the space that fits (`teacher_init.largest_teacher_cut`), taken from the
  teacher's own weights; scored untrained and after the same distillation as the family (its
  steps and the settings its models record).

    python benchmarks/retention.py nasbert-out --data-dir ../shared/data/glue --compare old-out

Each model of OUT is also compared with its same-budget slice (distilled, else untrained): the
difference in corpus-pair retention with its 95% paired-bootstrap interval over the pairs, so
that a gap the choice of pairs could make is not read as a win.

Writes OUT/retention/retention.md and retention.json; slice models in OUT/retention/models/.
"""

import argparse
import sys
from pathlib import Path

from nasbert_hf.distill import distill_exported, distilled_steps
from nasbert_hf.export import from_supernet, model_metadata, save_model_folder
from nasbert_hf.folders import write_json
from nasbert_hf.modeling import NasBertModel
from nasbert_hf.pipeline import supernet_run_of, teacher_dimensions
from nasbert_hf.retention import (
    corpus_sentence_pairs, mrpc_auc, mrpc_pairs, pair_cosines, retention_difference, retention_of,
)
from nasbert_hf.search import Budget, cost_model_for
from nasbert_hf.supernet import Supernet
from nasbert_hf.teacher import load_teacher
from nasbert_hf.teacher_init import largest_teacher_cut, slot_layers, untrained_copy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import distill_options, log, read  # noqa: E402  (the options the main job distils with; helpers)


def family_models(out):
    return [(m["name"], Path(out) / m["name"]) for m in read(Path(out) / "summary.json")["models"]]


def family_distillation(out):
    """The distillation settings the family's models record (those of the `compress` that made them,
    which may differ from the supernet run's preset)."""
    record = max((read(path / "nasbert.json").get("distillation") or {} for _, path in family_models(out)),
                 key=lambda r: r.get("steps", 0))
    if not record:
        return {}
    weights = record["weights"]
    return {"learning_rate": record["learning_rate"], "batch_size": record["batch_size"], "seq_len": record["seq_len"],
            "temperature": record["temperature"], "hidden_weight": weights["hidden"],
            "mlm_kd_weight": weights["mlm_kd"], "mlm_weight": weights["mlm"]}


def slice_models(out, teacher, distill):
    """Export (and with `distill`, distil like the family) the slice of every budget of OUT."""
    run_dir = supernet_run_of(out)
    supernet, space, run_config = Supernet.from_run(run_dir)
    if not supernet.in_teacher_coordinates:
        raise ValueError(f"{run_dir} was not trained in teacher coordinates; slices come from such a supernet.")
    source = untrained_copy(supernet, teacher)
    params = cost_model_for(Budget("params", float("inf")), run_config["seq_len"],
                            **teacher_dimensions(teacher, supernet))
    folder = Path(out) / "retention" / "models"
    summary = read(Path(out) / "summary.json")
    names, steps = [], max(distilled_steps(path) for _, path in family_models(out))
    for model in summary["models"]:
        limit = Budget.parse(model["budget"]).limit
        arch = largest_teacher_cut(space, slot_layers(source, teacher), teacher.num_layers, params, limit)
        name = "slice-" + model["name"].removeprefix("nasbert-")
        if not (folder / name / "nasbert.json").is_file():
            exported = from_supernet(source, arch, teacher)
            save_model_folder(exported, teacher.tokenizer, model_metadata(name, arch, exported.config, kind="slice",
                                                                          budget=model["budget"]), folder / name)
        names.append(name)
        log(f"{name}: {arch} ({params.cost(arch) / 1e6:.2f}M)")
    undistilled = {}
    for name in names:  # a copy beside it: distillation replaces the model's folder
        undistilled[name] = folder / "undistilled" / name
        if not undistilled[name].is_dir():
            NasBertModel.from_pretrained(folder / name).save_pretrained(undistilled[name])
    if distill and steps:
        options = {**distill_options(run_config["training"].get("search_space", "tiny")),
                   **family_distillation(out), "num_blocks": space.num_blocks}
        distill_exported(folder, names, steps, supernet_run=str(run_dir), **options)
    rows = [(f"{name} (untrained)", undistilled[name]) for name in names]
    return rows + ([(f"{name} (distilled {steps})", folder / name) for name in names] if distill and steps else [])


def same_budget_slice(name, out, cosines):
    """The row of the slice a model of OUT is compared with: distilled if scored, else untrained."""
    family = f" ({Path(out).name})"
    if not (name.startswith("nasbert-") and name.endswith(family)):
        return None
    prefix = "slice-" + name.removesuffix(family).removeprefix("nasbert-") + " ("
    candidates = [row for row in cosines if row.startswith(prefix)]
    return next((row for row in candidates if "distilled" in row), candidates[0] if candidates else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="A finished `nasbert compress` folder.")
    parser.add_argument("--compare", nargs="*", default=[], help="Other family folders to score beside it.")
    parser.add_argument("--data-dir", help="GLUE data folder: adds zero-shot MRPC (ROC AUC of cosines).")
    parser.add_argument("--pairs", type=int, default=1000, help="Corpus sentence pairs (default 1000).")
    parser.add_argument("--no-slices", action="store_true", help="Do not build the slice baselines.")
    parser.add_argument("--no-distill", action="store_true", help="Score the slices untrained only.")
    args = parser.parse_args()

    out = Path(args.out_dir)
    teacher = load_teacher()
    tokenizer = teacher.tokenizer
    pairs = corpus_sentence_pairs(count=args.pairs)
    reference = pair_cosines(teacher.model, tokenizer, pairs)
    mrpc = mrpc_pairs(args.data_dir) if args.data_dir else None
    rows = [("teacher", None)]
    for folder in [out, *map(Path, args.compare)]:
        rows += [(f"{name} ({folder.name})", path) for name, path in family_models(folder)]
    if not args.no_slices:
        rows += slice_models(out, teacher, distill=not args.no_distill)
    results, cosines = [], {}
    for name, path in rows:
        model = teacher.model if path is None else NasBertModel.from_pretrained(path)
        size = sum(p.numel() for p in model.parameters())
        cosines[name] = pair_cosines(model, tokenizer, pairs)
        result = {"model": name, "params": size, "corpus_pairs": retention_of(cosines[name], reference)}
        if mrpc:
            result["mrpc_auc"] = mrpc_auc(model, tokenizer, *mrpc)
        results.append(result)
        log(f"{name}: {size / 1e6:.2f}M, " + ", ".join(f"{k} {v:.1f}" for k, v in result.items() if k not in ("model", "params")))
    for result in results:
        baseline = same_budget_slice(result["model"], out, cosines)
        if baseline:
            result["vs_slice"] = {"slice": baseline, **dict(zip(
                ("difference", "low", "high"), retention_difference(cosines[result["model"]], cosines[baseline], reference)))}
    report = Path(out) / "retention"
    report.mkdir(parents=True, exist_ok=True)
    write_json(report / "retention.json", results)
    header = ("| model | params | corpus pairs (Spearman x 100) | vs same-budget slice (95% CI) |"
              + (" MRPC zero-shot (AUC x 100) |" if mrpc else ""))
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        versus = r.get("vs_slice")
        versus = f"{versus['difference']:+.1f} [{versus['low']:+.1f}, {versus['high']:+.1f}]" if versus else ""
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['corpus_pairs']:.1f} | {versus} |"
                     + (f" {r['mrpc_auc']:.1f} |" if mrpc else ""))
    (report / "retention.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
