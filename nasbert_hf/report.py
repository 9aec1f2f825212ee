"""`nasbert report`: fine-tune a run's models (and baselines) on GLUE tasks and tabulate the results.

Every model folder of `OUT/` (those with a `nasbert.json`) and every `--baseline` folder is
fine-tuned with the same recipe and seed on each task; the results are kept in
`OUT/report/<model>/<task>/eval_results.json` together with the settings that produced them (a
pair finished with the same settings is not run again, so an interrupted report resumes, while a
changed setting or a re-exported model re-runs it), the headline scores are written into each
exported model's `nasbert.json` and model card, and the table goes to `OUT/report.md`.
"""

import hashlib
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .folders import (
    CONFIG_FILE, METADATA_FILE, MODEL_CARD_FILE, atomic_write_text, read_json, read_metadata, write_json,
    write_metadata,
)
from .metrics import GLUE_METRICS
from .search import human

EVAL_RESULTS = "eval_results.json"
SETTINGS_KEY = "report_settings"  # where eval_results.json keeps the settings of its run


@dataclass
class ReportArguments:
    """Arguments of `report` (and of `nasbert report`)."""

    out_dir: str = field(metadata={"help": "The folder `nasbert compress` wrote (holding nasbert-*/ folders)."})
    tasks: List[str] = field(default_factory=lambda: ["sst2", "mrpc", "cola"], metadata={"help": "GLUE tasks."})
    data_dir: Optional[str] = field(
        default=None, metadata={"help": "GLUE folder in the official layout (e.g. ../shared/data/glue); default: the Hub."}
    )
    baselines: List[str] = field(
        default_factory=list,
        metadata={"help": "Baseline model folders fine-tuned the same way (e.g. `nasbert convert` output).",
                  "metavar": "DIR"},
    )
    max_train_samples: Optional[int] = field(default=2000, metadata={"help": "Training examples per task (0: all)."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Dev examples per task (default: all)."})
    max_seq_length: int = field(default=64, metadata={"help": "Tokens per input."})
    epochs: float = field(default=1.0, metadata={"help": "Training epochs per task."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size (evaluation: twice it)."})
    seed: int = field(default=0, metadata={"help": "Seed of the fine-tuning runs."})

    def __post_init__(self):
        if self.max_train_samples == 0:
            self.max_train_samples = None  # 0 on the command line: every training example


def headline(task, results):
    """The GLUE score of a task: the mean of its official metrics (e.g. MRPC: accuracy and F1), x100."""
    values = [results[f"eval_{name}"] for name in GLUE_METRICS[task]]
    return 100 * statistics.mean(values)


def model_folders(out_dir):
    """The exported model folders of a compress output folder, smallest first (total parameters, as
    the names count them; the body count of folders written before `params` was recorded)."""
    folders = [p.parent for p in Path(out_dir).glob(f"*/{METADATA_FILE}")]
    if not folders:
        raise FileNotFoundError(f"No exported models (*/{METADATA_FILE}) in {out_dir}; run `nasbert compress` first.")

    def size(folder):
        metadata = read_metadata(folder)
        return metadata.get("params", metadata.get("params_no_embeddings", 0)), folder.name

    return sorted(folders, key=size)


def model_fingerprint(model_dir):
    """SHA-256 of a model folder's config and weight files (not `nasbert.json`, which holds the scores):
    a model re-exported under the same name is a different model. A Hub name stands for itself."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return str(model_dir)
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.name == CONFIG_FILE or path.suffix in (".safetensors", ".bin"):
            digest.update(path.name.encode("utf-8"))
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def run_settings(model_dir, task, args):
    """Everything a fine-tuning score depends on besides the code: stored with the score, compared on reuse."""
    return {
        "task": task,
        "model": model_fingerprint(model_dir),
        "data_dir": None if args.data_dir is None else str(Path(args.data_dir).resolve()),
        "max_train_samples": args.max_train_samples,
        "max_eval_samples": args.max_eval_samples,
        "max_seq_length": args.max_seq_length,
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }


def stored_results(path, settings):
    """The results at `path` if a run with exactly `settings` wrote them, else None (re-run). An
    unreadable file is a cache miss too: it holds no score worth keeping."""
    try:
        results = read_json(path)
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) and results.get(SETTINGS_KEY) == settings else None


def finetune(model_dir, task, args, results_dir):
    """Fine-tune and evaluate one model on one task. The results of an earlier run are reused only when
    it had the same settings (`run_settings`): otherwise a report run with a new learning rate, say,
    would print the new one in its header above scores of the old one."""
    path = Path(results_dir) / EVAL_RESULTS
    settings = run_settings(model_dir, task, args)
    results = stored_results(path, settings)
    if results is not None:
        return results
    import torch
    from transformers import TrainingArguments

    from .finetune import GlueArguments, ModelArguments, run_glue

    # The folder is this report's own, from a run with other settings (or cut short): fine-tuning
    # refuses to write over the model it holds, so clear it first.
    shutil.rmtree(results_dir, ignore_errors=True)

    training = TrainingArguments(
        output_dir=str(results_dir), do_train=True, do_eval=True, num_train_epochs=args.epochs,
        learning_rate=args.learning_rate, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=2 * args.batch_size, seed=args.seed, save_strategy="no", eval_strategy="no",
        report_to=[], logging_steps=50, use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
    )
    data = GlueArguments(task_name=task, data_dir=args.data_dir, max_seq_length=args.max_seq_length,
                         max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples)
    results = run_glue(ModelArguments(model_name_or_path=str(model_dir)), data, training)
    results[SETTINGS_KEY] = settings
    write_json(path, results, sort_keys=True)
    return results


def describe(model_dir):
    """Name and costs of a model folder (exported models carry them in `nasbert.json`)."""
    metadata = read_metadata(model_dir)
    if metadata is not None:
        return {"name": metadata["name"], "params": metadata["params_no_embeddings"], "flops": metadata["flops"],
                "latency": (metadata.get("latency_ms") or {}).get("cpu")}
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir)
    params = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("embeddings."))
    return {"name": Path(model_dir).name, "params": params, "flops": None, "latency": None}


def record_scores(model_dir, scores):
    """Write the scores into an exported model's `nasbert.json` and refresh its model card."""
    from .model_card import build_model_card

    metadata = read_metadata(model_dir)
    metadata["scores"] = {**(metadata.get("scores") or {}), **scores}
    write_metadata(model_dir, metadata)
    atomic_write_text(Path(model_dir) / MODEL_CARD_FILE, build_model_card(model_dir))


def report(args):
    """Fine-tune everything, write `OUT/report.md`, and return the table text."""
    rows = []
    exported = model_folders(args.out_dir)
    for model_dir in [*exported, *map(Path, args.baselines)]:
        info = describe(model_dir)
        scores = {task: headline(task, finetune(model_dir, task, args, Path(args.out_dir) / "report" / info["name"] / task))
                  for task in args.tasks}
        if model_dir in exported:
            record_scores(model_dir, {task: round(value, 2) for task, value in scores.items()})
        rows.append((info, scores, "searched" if model_dir in exported else "baseline"))
    table = format_report(rows, args)
    (Path(args.out_dir) / "report.md").write_text(table + "\n", encoding="utf-8")
    return table


def format_report(rows, args):
    tasks = args.tasks
    lines = [
        f"Fine-tuned {args.epochs:g} epoch(s) on {args.max_train_samples or 'all'} training examples, seq "
        f"{args.max_seq_length}, lr {args.learning_rate:g}, batch {args.batch_size}, seed {args.seed}; dev-set scores x100 "
        "(CoLA: Matthews corr.; SST-2: accuracy; MRPC: mean of accuracy and F1).",
        "",
        "| model | kind | params (non-emb.) | FLOPs | CPU latency (ms) | " + " | ".join(tasks) + " | average |",
        "|---|---|---|---|---|" + "---|" * len(tasks) + "---|",
    ]
    for info, scores, kind in rows:
        flops = human(info["flops"]) if info["flops"] else "-"
        latency = f"{info['latency']:.2f}" if info["latency"] else "-"
        values = " | ".join(f"{scores[t]:.1f}" for t in tasks)
        lines.append(f"| {info['name']} | {kind} | {human(info['params'])} | {flops} | {latency} | {values} | "
                     f"{statistics.mean(scores.values()):.1f} |")
    return "\n".join(lines)
