"""The training loop of the supernet and distillation stages, and its plumbing (Accelerate).

`TrainingLoop` is the one step loop; a stage supplies its step and its evaluation. Around it:
the arguments both stages share (`LoopArguments`), one global batch split over the processes, a
JSON-lines tracker, batches that resume at any step, the run folder's checks (no overwrite, and
`--resume` only with the arguments that define the run), atomic checkpoints
(`RUN_DIR/checkpoints/step-N/`: Accelerate state + `trainer_state.json`, written into a temp
folder and renamed when complete), and seeds derived from (seed, step, ...).

Also the checks that turn bad user files into one clear `ValueError` naming the file (corrupt
safetensors weights, damaged checkpoints, malformed YAML/JSON configs, sequence lengths beyond a
model's position embeddings), so that the command line reports them without a traceback.
"""

import json
import logging
import math
import os
import pickle
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.tracking import GeneralTracker
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .folders import atomic_write_text, check_safetensors, read_json, write_json

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
LOG_FILE = "log.jsonl"


@dataclass
class LoopArguments:
    """Arguments every training loop here shares: corpus, batches, optimizer, validation split,
    checkpoints, logging, devices. `SupernetTrainingArguments` and `DistillArguments` add their own
    and give some of these another default (`loop_field`)."""

    corpus: Optional[str] = field(
        default=None, metadata={"help": "Corpus file/folder/glob or Hub dataset (default: embedded Wikipedia sample)."}
    )
    seq_len: int = field(default=128, metadata={"help": "Tokens per packed sequence."})
    batch_size: int = field(default=16, metadata={"help": "Global training batch (split over processes)."})
    max_steps: int = field(default=200, metadata={"help": "Training steps."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and LayerNorms)."})
    warmup_steps: int = field(default=20, metadata={"help": "Linear warm-up steps."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "transformers scheduler name."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0: off)."})
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
        # Every value is checked here, before anything is written: a run that fails later on a bad
        # value would leave a run folder that only `--resume` (with that same value) accepts.
        if not self.validation_size > 0:
            raise ValueError(f"validation_size={self.validation_size} must be a fraction in (0, 1) or a number >= 1.")
        if self.validation_size >= 1:
            self.validation_size = int(self.validation_size)
        check_at_least_one(self, "seq_len", "batch_size", "max_steps", "eval_batch_size", "eval_batches", "save_steps",
                           "logging_steps", "keep_checkpoints")
        if self.max_train_sequences is not None:
            check_at_least_one(self, "max_train_sequences")
        check_optimizer_arguments(self)
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision={self.mixed_precision!r} is not one of {', '.join(MIXED_PRECISION)}.")


def loop_field(name, default):
    """The `LoopArguments` field `name` with a stage's own `default` (its help stays the shared one)."""
    return field(default=default, metadata=LoopArguments.__dataclass_fields__[name].metadata)


MIXED_PRECISION = ("no", "fp16", "bf16")


def check_at_least_one(args, *names):
    for name in names:
        if getattr(args, name) < 1:
            raise ValueError(f"{name}={getattr(args, name)} must be at least 1.")


def check_optimizer_arguments(args):
    """Validate the optimizer and scheduler fields (`learning_rate`, `weight_decay`,
    `warmup_steps`, `max_grad_norm`, `lr_scheduler_type`)."""
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise ValueError(f"learning_rate={args.learning_rate} must be a positive number.")
    for name in ("weight_decay", "warmup_steps", "max_grad_norm"):
        if not getattr(args, name) >= 0:
            raise ValueError(f"{name}={getattr(args, name)} must be non-negative.")
    schedulers = scheduler_names()
    if args.lr_scheduler_type not in schedulers:
        raise ValueError(f"lr_scheduler_type={args.lr_scheduler_type!r} is not a scheduler; use one of {', '.join(schedulers)}.")


# `get_scheduler` names the loops cannot drive: they step on a metric (plateau, greedy) or need
# arguments the loops do not pass (min_lr, num_decay_steps).
UNSUPPORTED_SCHEDULERS = (
    "reduce_lr_on_plateau", "greedy", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay",
)


def scheduler_names():
    """The `transformers.get_scheduler` names the training loops accept."""
    from transformers import SchedulerType

    return [kind.value for kind in SchedulerType if kind.value not in UNSUPPORTED_SCHEDULERS]


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


def mlm_dataloaders(args, teacher, accelerator, masked=True):
    """Train and validation loaders of the corpus, BERT-masked or (`masked=False`) the text as it is."""
    from .data import DEFAULT_CORPUS, build_mlm_datasets, masking_rate, mlm_dataloader

    check_max_length(args.seq_len, teacher, "seq_len", f"teacher {teacher.name!r}")
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
    train = mlm_dataloader(splits["train"], teacher.tokenizer, args.batch_size, shuffle=True, seed=args.seed,
                           mlm_probability=masking_rate(masked))
    evaluation = mlm_dataloader(
        splits["validation"], teacher.tokenizer, args.eval_batch_size, shuffle=False, seed=args.seed,
        mlm_probability=masking_rate(masked),
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
    atomic_write_text(path, "".join(line + "\n" for line in kept))


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


# -- the run folder ----------------------------------------------------------------------------


def check_run_dir(args, run_dir, config_file, kind, another, check_same, accelerator):
    """Refuse to overwrite a run (`kind`, `another`: see the message), or to resume one with other
    arguments (`check_same(saved run config)` raises); return the checkpoint to resume from (None
    for a fresh start)."""
    config_path = Path(run_dir) / config_file
    checkpoint = None
    if config_path.is_file():
        if not args.resume:
            raise ValueError(
                f"{run_dir} already holds a {kind} ({config_file}); pass --resume to continue it or choose {another}."
            )
        check_same(read_json(config_path))
        checkpoint = latest_checkpoint(run_dir)
    accelerator.wait_for_everyone()  # every process has checked the folder before the main one writes
    return checkpoint


def same_value(name, saved, current):
    """Whether a saved run-defining value is the current one. Teachers compare by name: older runs
    recorded the default teacher by its installed folder."""
    if name == "teacher":
        from .teacher import teacher_name

        return teacher_name(saved) == teacher_name(current)
    return saved == current


def check_same_arguments(saved, current, names, instead, same=same_value):
    """Refuse to resume a run if one of the `training` arguments `names` (those that define the
    run) changed between the `saved` and `current` run configs, as `same(name, saved_value,
    value)` compares them; `instead` ends the message ("use another --run-dir")."""
    saved_args, current_args = saved.get("training", {}), current["training"]
    for name in names:
        if not same(name, saved_args.get(name), current_args[name]):
            raise ValueError(
                f"--resume: the run was started with {name}={saved_args.get(name)!r}, now "
                f"{name}={current_args[name]!r}; resume with the same value (or {instead})."
            )


def masked_inputs(run_config):
    """Whether a run trained on BERT-masked text. Runs made before inputs were left unmasked for
    hidden-state-only losses recorded nothing: they were masked."""
    return run_config.get("masked_inputs", True)


def check_same_inputs(saved, current, instead):
    """Refuse to resume a run whose inputs were masked differently."""
    if masked_inputs(saved) != current["masked_inputs"]:
        state = {True: "BERT-masked", False: "unmasked"}
        raise ValueError(
            f"--resume: the run was trained on {state[masked_inputs(saved)]} text, this one would be on "
            f"{state[current['masked_inputs']]} text; {instead}."
        )


def write_run_config(run_dir, config_file, run_config, message, accelerator):
    """Write `run_config` into `RUN_DIR/config_file` (and create `checkpoints/`) and print
    `message`, on the main process only."""
    if accelerator.is_main_process:
        (Path(run_dir) / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        write_json(Path(run_dir) / config_file, run_config)
        accelerator.print(message)
    accelerator.wait_for_everyone()


# -- the loop ----------------------------------------------------------------------------------


class TrainingLoop:
    """The step loop of both stages, over the model, optimizer, loaders and scheduler that
    `accelerator.prepare` returned; `state` is a dict holding at least `step`.

    `start` resumes from a checkpoint (or starts fresh) and starts the trackers. `run` then reads
    like an Accelerate example: batches from the current step on, dropout reseeded from (seed,
    step, process) so that a resumed run draws what the uninterrupted one did, the stage's
    `train_step`, a log line every `logging_steps`, `evaluate` at `eval_steps`, an atomic
    checkpoint every `save_steps` and at the end.

    A stage subclasses it with its `name` (progress bar and tracker), `train_step` and
    `log_values`, and where it needs them `eval_steps`/`evaluate` and
    `checkpoint_state`/`restore_state`.
    """

    name = "train"
    eval_steps = ()

    def __init__(self, args, accelerator, model, optimizer, scheduler, teacher, train_loader, eval_loader, run_dir):
        self.args, self.accelerator, self.model = args, accelerator, model
        self.optimizer, self.scheduler, self.teacher = optimizer, scheduler, teacher
        self.train_loader, self.eval_loader, self.run_dir = train_loader, eval_loader, Path(run_dir)
        self.last_losses = None  # the last logged window's `log_values`

    def start(self, state, checkpoint, tracker_config):
        """The state to run from: `checkpoint`'s, or `state` for a fresh start (None). Log lines
        written after that step are dropped (they will be logged again); the trackers start."""
        if checkpoint is not None:
            state = self.restore_state(load_checkpoint(self.accelerator, checkpoint))
        if self.accelerator.is_main_process:
            truncate_log(self.run_dir / LOG_FILE, state["step"])
        self.accelerator.init_trackers(self.name, config=tracker_config)
        return state

    def run(self, state):
        args, accelerator = self.args, self.accelerator
        progress = tqdm(
            total=args.max_steps, initial=state["step"], desc=self.name, disable=not accelerator.is_local_main_process
        )
        window = []
        for batch in resumable_batches(accelerator, self.train_loader, state["step"], args.max_steps, args.batch_size):
            torch.manual_seed(derive_seed(args.seed, state["step"], accelerator.process_index))  # dropout
            self.model.train()
            window.append(self.train_step(batch, state))
            state["step"] = step = state["step"] + 1
            progress.update(1)
            if step % args.logging_steps == 0 or step == args.max_steps:
                self.log(window, step, progress)
                window = []
            if step in self.eval_steps:
                self.evaluate(state)
            if step % args.save_steps == 0 or step == args.max_steps:
                self.save(state)
        progress.close()
        return state

    def train_step(self, batch, state):
        """Train on `batch`, the batch of step `state["step"]`; return its losses as one 1-D tensor."""
        raise NotImplementedError

    def log_values(self, losses):
        """The tracker values (holding `loss`, the total) of `losses`: the `train_step` losses
        averaged over a logging window and over the processes, as a list of floats."""
        raise NotImplementedError

    def evaluate(self, state):
        """What the stage does at `eval_steps` (nothing by default)."""

    def checkpoint_state(self, state):
        """The `trainer_state.json` of a checkpoint; `restore_state` turns it back into `state`."""
        return {"step": state["step"]}

    def restore_state(self, saved):
        return saved

    def log(self, window, step, progress):
        losses = self.accelerator.reduce(torch.stack(window).mean(0), "mean").tolist()
        self.last_losses = self.log_values(losses)
        self.accelerator.log({**self.last_losses, "lr": self.scheduler.get_last_lr()[0]}, step=step)
        progress.set_postfix(loss=f"{self.last_losses['loss']:.4f}")

    def save(self, state):
        save_checkpoint(self.accelerator, self.run_dir, self.checkpoint_state(state), self.args.keep_checkpoints)


# -- checkpoints -------------------------------------------------------------------------------


def checkpoint_name(step):
    return f"step-{step:08d}"


def latest_checkpoint(run_dir):
    """The newest complete checkpoint folder, or None.

    A folder that is incomplete or damaged (no `trainer_state.json`, a truncated or corrupt file:
    see `checkpoint_problem`) is skipped with a warning naming it, so that `--resume` continues
    from the newest checkpoint it can load; the next save of that step replaces it.
    """
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("step-*"), reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("Skipping checkpoint %s: %s.", path, problem)
    return None


def checkpoint_problem(path):
    """Why the checkpoint folder `path` cannot be resumed from (a short phrase), or None if it can.

    Cheap checks only (headers and archive directories, no tensors read): a kill cannot cause
    these (checkpoints are published by a rename), but a full disk, a partial copy or a hand
    edit can.
    """
    path = Path(path)
    if not path.is_dir():
        return "not a folder"
    state = path / TRAINER_STATE
    if not state.is_file():
        return f"no {TRAINER_STATE} (an incomplete save)"
    try:
        if not isinstance(json.loads(state.read_text(encoding="utf-8")).get("step"), int):
            return f"{TRAINER_STATE} holds no step"
    except (ValueError, AttributeError):
        return f"{TRAINER_STATE} is not valid JSON"
    files = sorted(file for file in path.iterdir() if file.is_file())
    names = [file.name for file in files]
    if not any(name.startswith("model") and name.endswith(".safetensors") for name in names) and not any(
        name.startswith("pytorch_model") for name in names
    ):
        return "no model weights"
    if not any(name.startswith("optimizer") for name in names):
        return "no optimizer state"
    for file in files:
        problem = _file_problem(file)
        if problem is not None:
            return f"{file.name} {problem}"
    return None


def _file_problem(file):
    if file.stat().st_size == 0:
        return "is empty"
    if file.suffix == ".safetensors":
        try:
            check_safetensors(file)
        except ValueError:
            return "is truncated or not a safetensors file"
    if file.suffix == ".bin" and not zipfile.is_zipfile(file):
        return "is truncated or not a torch archive"
    return None


def load_checkpoint(accelerator, checkpoint):
    """`accelerator.load_state(checkpoint)`; returns its `trainer_state.json`. A file that cannot be
    read (damage `checkpoint_problem` does not see) is a `ValueError` naming the checkpoint."""
    from safetensors import SafetensorError

    try:
        accelerator.load_state(str(checkpoint))
    except (SafetensorError, RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        raise ValueError(
            f"Cannot resume from checkpoint {checkpoint}: {_one_line(error)}; delete that folder to resume from "
            "the previous checkpoint."
        ) from error
    return json.loads((Path(checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))


def save_checkpoint(accelerator, run_dir, trainer_state, keep):
    """Save the Accelerate state and `trainer_state` (JSON, holding `step`) into `checkpoints/step-N`,
    atomically: everything is written into a temp folder that is renamed when complete (replacing a
    damaged or incomplete folder of the same step); then only the newest `keep` checkpoints are kept.
    (Accelerate's own naming and rotation, `ProjectConfiguration(total_limit=...)`, write and delete
    folders in place, so a kill could leave a half checkpoint under a step's name.)"""
    folder = Path(run_dir) / CHECKPOINTS
    final = folder / checkpoint_name(trainer_state["step"])
    if checkpoint_problem(final) is None:
        return final
    temporary = folder / f".tmp-{final.name}"
    if accelerator.is_main_process and temporary.exists():
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(temporary))
        if accelerator.is_main_process:
            (temporary / TRAINER_STATE).write_text(json.dumps(trainer_state), encoding="utf-8")
            _fsync_tree(temporary)
    except Exception as error:
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)  # a partial checkpoint would only fill the disk further
        if not _is_write_error(error):
            raise
        raise OSError(_save_failure(error, folder, final)) from error
    if accelerator.is_main_process:
        _publish(temporary, final)
        _prune_checkpoints(folder, keep)
    accelerator.wait_for_everyone()
    return final


def _is_write_error(error):
    # safetensors reports a full disk as its own SafetensorError, outside the OSError hierarchy.
    return isinstance(error, OSError) or type(error).__name__ == "SafetensorError"


def _save_failure(error, folder, final):
    """The message of a checkpoint save that failed to write: what, where, the free space, what is kept."""
    free = shutil.disk_usage(folder).free / 2**20
    last = latest_checkpoint(folder.parent)
    kept = f"the last good checkpoint {last.name} is kept" if last is not None else "no earlier checkpoint exists"
    return (
        f"Could not write checkpoint {final.name} in {folder} ({_one_line(error)}); {free:.0f} MiB are free there. "
        f"The partial checkpoint was removed and {kept}: free some space, then rerun with --resume."
    )


def _publish(temporary, final):
    """Rename the finished `temporary` folder to `final`. A folder already there (skipped as damaged
    on resume) is moved aside first: a rename cannot replace a non-empty folder."""
    if final.exists():
        doomed = final.with_name(f".old-{final.name}")
        shutil.rmtree(doomed, ignore_errors=True)
        os.replace(final, doomed)
    os.replace(temporary, final)


def _fsync_tree(folder):
    # Make the files durable before the rename publishes the folder.
    for path in Path(folder).iterdir():
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _prune_checkpoints(folder, keep):
    """Delete every checkpoint folder older than the newest `keep` complete ones (damaged ones too)."""
    complete = sorted(path for path in folder.glob("step-*") if checkpoint_problem(path) is None)
    if len(complete) >= keep:
        for old in sorted(folder.glob("step-*")):
            if old.name >= complete[-keep].name:
                break
            doomed = old.with_name(f".old-{old.name}")
            os.replace(old, doomed)  # atomic: a kill during the delete leaves no half checkpoint named step-*
            shutil.rmtree(doomed)
    for leftover in folder.glob(".old-*"):
        shutil.rmtree(leftover, ignore_errors=True)


# -- user files ----------------------------------------------------------------------------------


def check_max_length(length, config, flag, what="the model"):
    """Raise `ValueError` when `length` tokens exceed `config.max_position_embeddings` (token
    positions beyond it have no embedding: the forward pass would fail with an index error).
    `config` is a model config, or a `Teacher` (which has the same attribute).
    `flag` names the option (e.g. `--max-seq-length`), `what` the model (`the teacher ...`)."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and length > limit:
        raise ValueError(f"{flag}={length} exceeds {what}'s max_position_embeddings={limit}; use at most {limit}.")


def _one_line(error):
    return " ".join(str(error).split())


def derive_seed(*numbers):
    """A well-mixed 63-bit seed from a tuple of non-negative integers (stable across Python versions)."""
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1, dtype=np.uint64)[0] >> 1)
