"""Training plumbing shared by the supernet and distillation loops (Accelerate).

One global batch split over the processes, a JSON-lines tracker, batches that resume at any
step, atomic checkpoints (`RUN_DIR/checkpoints/step-N/`: Accelerate state + `trainer_state.json`,
written into a temp folder and renamed when complete), and seeds derived from (seed, step, ...).
"""

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.tracking import GeneralTracker
from torch.utils.data import DataLoader

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
LOG_FILE = "log.jsonl"


@dataclass
class LoopArguments:
    """Arguments every training loop here shares: validation split, checkpoints, logging, devices.
    `SupernetTrainingArguments` and `DistillArguments` add their own."""

    validation_size: float = field(default=0.05, metadata={"help": "Held-out fraction (or number, if >= 1) of sequences."})
    max_train_sequences: Optional[int] = field(default=None, metadata={"help": "Cap on training sequences."})
    eval_batch_size: int = field(default=16, metadata={"help": "Global validation batch."})
    eval_batches: int = field(default=2, metadata={"help": "Validation batches per evaluation."})
    save_steps: int = field(default=50, metadata={"help": "Steps between checkpoints."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Checkpoints kept on disk."})
    logging_steps: int = field(default=10, metadata={"help": "Steps between log lines."})
    seed: int = field(default=0, metadata={"help": "Seed of everything random."})
    resume: bool = field(default=False, metadata={"help": "Continue the run from its last checkpoint."})
    cpu: bool = field(default=False, metadata={"help": "Train on CPU even when a GPU is present."})
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "datasets cache folder."})
    report_to: str = field(default="jsonl", metadata={"help": "Comma-separated trackers: jsonl, tensorboard, wandb..."})

    def __post_init__(self):
        if self.validation_size >= 1:
            self.validation_size = int(self.validation_size)
        check_at_least_one(self, "eval_batch_size", "eval_batches", "save_steps", "logging_steps")


def check_at_least_one(args, *names):
    for name in names:
        if getattr(args, name) < 1:
            raise ValueError(f"{name}={getattr(args, name)} must be at least 1.")


class JsonLinesTracker(GeneralTracker):
    """An Accelerate tracker writing one JSON object per `log` call to `RUN_DIR/log.jsonl`."""

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)

    @property
    def tracker(self):
        return self.path

    def store_init_configuration(self, values):
        pass  # the configuration is `run_config.json`

    def log(self, values, step=None, **kwargs):
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")


def make_accelerator(args, run_dir):
    trackers = []
    for name in filter(None, (part.strip() for part in args.report_to.split(","))):
        trackers.append(JsonLinesTracker(run_dir / LOG_FILE) if name == "jsonl" else name)
    return Accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        # The batch is global: every process gets its slice of the same batch, so results do not
        # depend on the number of processes (and the scheduler steps once per step).
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        # Each step trains one sampled op per slot: the other ops get no gradient.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        log_with=trackers or None,
        project_dir=str(run_dir),
    )


def check_global_batches(args, num_processes):
    for name in ("batch_size", "eval_batch_size"):
        if getattr(args, name) % num_processes:
            raise ValueError(
                f"{name}={getattr(args, name)} is the global batch and must be divisible by the number of "
                f"processes ({num_processes})."
            )


def parameter_groups(model, weight_decay):
    # As in BERT pretraining: no weight decay on biases and LayerNorm weights. Frozen parameters
    # (the supernet's fixed pca projections) are left out.
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim == 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def mlm_dataloaders(args, teacher, accelerator):
    from .data import DEFAULT_CORPUS, build_mlm_datasets, mlm_dataloader

    corpus = args.corpus or DEFAULT_CORPUS
    with accelerator.main_process_first():  # the main process tokenises, the others read its cache
        splits = build_mlm_datasets(
            corpus,
            teacher.tokenizer,
            seq_len=args.seq_len,
            validation_size=args.validation_size,
            seed=args.seed,
            max_train_sequences=args.max_train_sequences,
            cache_dir=args.cache_dir,
        )
    if len(splits["validation"]) < args.eval_batch_size:
        raise ValueError(
            f"The validation split holds {len(splits['validation'])} sequences, fewer than one eval batch "
            f"({args.eval_batch_size}); raise validation_size or lower eval_batch_size."
        )
    train = mlm_dataloader(splits["train"], teacher.tokenizer, args.batch_size, shuffle=True, seed=args.seed)
    evaluation = mlm_dataloader(
        splits["validation"], teacher.tokenizer, args.eval_batch_size, shuffle=False, seed=args.seed
    )
    return full_batches_only(train), full_batches_only(evaluation)


def full_batches_only(loader):
    """The same loader with `drop_last=True`: a short last batch would split unevenly over
    processes (Accelerate pads it with repeated rows), so results would depend on their number."""
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=loader.sampler,
        collate_fn=loader.collate_fn,
        drop_last=True,
    )


def truncate_log(path, step):
    """Drop log lines written after the checkpoint a run resumes from (they will be logged again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line_step(line) <= step]
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    temporary.replace(path)


def line_step(line):
    try:
        return json.loads(line).get("step") or 0
    except json.JSONDecodeError:  # a line cut by a kill
        return float("inf")


def resumable_batches(accelerator, train_loader, start_step, max_steps, batch_size):
    """Training batches from global step `start_step` on: epoch and offset follow from the step."""
    per_epoch = len(train_loader)
    if per_epoch == 0:
        raise ValueError(
            f"The training split has fewer sequences than one batch ({batch_size}); "
            "use a larger corpus or a smaller --batch-size."
        )
    step = start_step
    while step < max_steps:
        epoch, offset = divmod(step, per_epoch)
        train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, offset) if offset else train_loader
        for batch in loader:
            yield batch
            step += 1
            if step >= max_steps:
                return


# -- checkpoints -------------------------------------------------------------------------------


def checkpoint_name(step):
    return f"step-{step:08d}"


def latest_checkpoint(run_dir):
    """The newest complete checkpoint folder (one holding `trainer_state.json`), or None."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    complete = sorted(path for path in folder.glob("step-*") if (path / TRAINER_STATE).is_file())
    return complete[-1] if complete else None


def save_checkpoint(accelerator, run_dir, trainer_state, keep):
    """Save the Accelerate state and `trainer_state` (JSON, holding `step`) into `checkpoints/step-N`,
    atomically: everything is written into a temp folder that is renamed when complete; then only
    the newest `keep` checkpoints are kept."""
    folder = Path(run_dir) / CHECKPOINTS
    final = folder / checkpoint_name(trainer_state["step"])
    if (final / TRAINER_STATE).is_file():
        return final
    temporary = folder / f".tmp-{final.name}"
    if accelerator.is_main_process and temporary.exists():
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    if accelerator.is_main_process:
        (temporary / TRAINER_STATE).write_text(json.dumps(trainer_state), encoding="utf-8")
        _fsync_tree(temporary)
        os.replace(temporary, final)
        _prune_checkpoints(folder, keep)
    accelerator.wait_for_everyone()
    return final


def _fsync_tree(folder):
    # Make the files durable before the rename publishes the folder.
    for path in Path(folder).iterdir():
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _prune_checkpoints(folder, keep):
    complete = sorted(path for path in folder.glob("step-*") if (path / TRAINER_STATE).is_file())
    for old in complete[: max(0, len(complete) - keep)]:
        doomed = old.with_name(f".old-{old.name}")
        os.replace(old, doomed)  # atomic: a kill during the delete leaves no half checkpoint named step-*
        shutil.rmtree(doomed)
    for leftover in folder.glob(".old-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def derive_seed(*numbers):
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1, dtype=np.uint64)[0] >> 1)
