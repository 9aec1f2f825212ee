"""Pre-training distillation of an exported model (NAS-BERT section 3.4: the final models).

A searched architecture is exported with weights inherited from the supernet (`export.from_supernet`);
`distill(args)` then trains the whole model further against the teacher on the pretraining
corpus, with three losses on every batch (BERT-masked only when an MLM term is on: the hidden
term alone compares both models on the text itself, `uses_masked_inputs`):

- **hidden**: MSE over real tokens between the student's hidden state at the end of each block
  (slot `k * num_slots / num_blocks`), mapped to the teacher's width by a learned linear
  projection (one per matched layer), and the teacher's hidden state at its block boundary k
  (`Teacher.block_boundaries`), k = 1..num_blocks, averaged over the matched layers;
- **mlm_kd**: soft-label masked-LM distillation, `T^2 * KL(teacher || student)` of the vocabulary
  distributions at temperature T on the masked positions (only when the teacher has an MLM head);
- **mlm**: the student's own masked-LM cross-entropy on the masked positions.

The total is `hidden_weight * hidden + mlm_kd_weight * mlm_kd + mlm_weight * mlm`. Both models
compute vocabulary logits only at the masked positions (~15% of the tokens): on a small
student the vocabulary projection is most of the compute.

The run folder (default `OUTPUT_DIR/../distill-runs/<name>/`) holds `distill_config.json`,
`initial_validation.json`, `log.jsonl` and the resumable `checkpoints/step-N/` (atomic); the
distilled model is written with `export.save_model_folder` (atomically replacing `output_dir`,
which may be the input folder itself) with its `nasbert.json` extended by a `distillation`
record. The loop is the supernet stage's (`training.TrainingLoop`): `batch_size` is the global
batch split over processes, batches are a function of (seed, step), dropout is reseeded from
(seed, step, process), so one process, several gloo/GPU processes, and a run killed and
`--resume`d all give the same model.
"""

import logging
import math
import os
import shutil
from contextlib import contextmanager
from functools import partial
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from safetensors import safe_open
from torch import nn

from .blockwise import masked_sse
from .folders import (
    CONFIG_FILE, SUPERNET_WEIGHTS_FILE, check_model_dir, check_model_weights, read_json, read_metadata, write_json,
)
from .paths import check_output_folder
from .training import (
    CHECKPOINTS,
    LoopArguments,
    TrainingLoop,
    check_global_batches,
    check_run_dir,
    check_same_arguments,
    check_same_inputs,
    loop_field,
    make_accelerator,
    mlm_dataloaders,
    parameter_groups,
    same_value,
    write_run_config,
)

logger = logging.getLogger(__name__)

DISTILL_CONFIG = "distill_config.json"
INITIAL_VALIDATION = "initial_validation.json"
RUNS_SUBDIR = "distill-runs"
LOSS_NAMES = ("hidden", "mlm_kd", "mlm")

# Arguments that define a run; `--resume` must keep them (max_steps, save_steps... may change).
RUN_IDENTITY = (
    "model", "teacher", "corpus", "supernet_run", "seq_len", "batch_size", "learning_rate", "weight_decay",
    "hidden_weight", "mlm_kd_weight", "mlm_weight", "temperature", "num_blocks", "validation_size",
    "max_train_sequences", "dropout", "seed",
)


@dataclass
class DistillArguments(LoopArguments):
    """Arguments of `distill` (and of `recipes/distill.py`, `nasbert distill`)."""

    model: Optional[str] = field(default=None, metadata={"help": "Exported NasBert model folder to distil."})
    output_dir: Optional[str] = field(
        default=None, metadata={"help": "Folder of the distilled model (default: the model folder, replaced in place)."}
    )
    run_dir: Optional[str] = field(
        default=None, metadata={"help": "Folder for checkpoints and logs (default: OUTPUT_DIR/../distill-runs/<name>)."}
    )
    teacher: Optional[str] = field(
        default=None,
        metadata={"help": "Teacher folder or Hub name (default: the model's nasbert.json teacher, else all-MiniLM-L6-v2)."},
    )
    supernet_run: Optional[str] = field(
        default=None,
        metadata={"help": "Supernet run folder: its block output projections initialise the hidden-state projections."},
    )
    learning_rate: float = loop_field("learning_rate", default=3e-4)
    warmup_steps: int = loop_field("warmup_steps", default=10)
    hidden_weight: float = field(default=1.0, metadata={"help": "Weight of the hidden-state MSE."})
    mlm_kd_weight: float = field(default=1.0, metadata={"help": "Weight of the soft-label MLM KD (MLM-head teachers)."})
    mlm_weight: float = field(default=1.0, metadata={"help": "Weight of the student's own MLM loss."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of the soft-label KD."})
    dropout: Optional[float] = field(
        default=None, metadata={"help": "Dropout while distilling (default: the model's; its saved config keeps it)."}
    )
    num_blocks: Optional[int] = field(
        default=None, metadata={"help": "Matched layers (default: the search space's blocks, else a common divisor)."}
    )
    eval_batches: int = field(default=4, metadata={"help": "Validation batches scored before and after."})
    keep_checkpoints: int = loop_field("keep_checkpoints", default=1)

    def __post_init__(self):
        super().__post_init__()
        for name in ("hidden_weight", "mlm_kd_weight", "mlm_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be non-negative.")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1).")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be positive.")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError(f"num_blocks={self.num_blocks} must be at least 1 (or unset for the default).")

    def resolved_output_dir(self):
        return Path(self.output_dir or self.model)

    def resolved_run_dir(self):
        if self.run_dir:
            return Path(self.run_dir)
        output = self.resolved_output_dir().resolve()
        return output.parent / RUNS_SUBDIR / output.name


# ---------------------------------------------------------------------------------------------
# Losses


def loss_sums(student_states, teacher_states, attention_mask, labels, student_logits=None, teacher_logits=None,
              temperature=1.0):
    """`{term: (sum, count)}` of every loss term on one batch, in float32 (sums, so batches and
    processes combine exactly).

    `student_states`/`teacher_states`: matched hidden states at the teacher's width, pairwise.
    `student_logits`/`teacher_logits`: vocabulary logits at the masked positions
    (`labels != -100`, in row-major order); the KD term needs both, the MLM term the student's.
    """
    if len(student_states) != len(teacher_states):
        raise ValueError(f"Got {len(student_states)} student states for {len(teacher_states)} teacher states.")
    sse, count = zip(*(masked_sse(s, t, attention_mask) for s, t in zip(student_states, teacher_states)))
    sums = {"hidden": (torch.stack(sse).sum(), torch.stack(count).sum())}
    targets = labels[labels != -100]
    masked = torch.tensor(float(targets.numel()), device=targets.device)
    if teacher_logits is not None:
        student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
        teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
        # T^2 keeps the gradient scale independent of T (Hinton et al., 2015).
        kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="sum", log_target=True) * temperature**2
        sums["mlm_kd"] = (kl, masked)
    if student_logits is not None:
        sums["mlm"] = (F.cross_entropy(student_logits.float(), targets, reduction="sum"), masked)
    return sums


def distillation_losses(student_states, teacher_states, attention_mask, labels, student_logits=None,
                        teacher_logits=None, temperature=1.0, masked_count=None):
    """`{"hidden": ..., "mlm_kd": ..., "mlm": ...}`: each term's mean (see `loss_sums`); `mlm_kd`
    only with teacher logits, `mlm` only with student logits.

    `masked_count` replaces the number of masked positions the MLM terms are averaged over. The
    training loop passes the global count divided by the number of processes: the gradients that
    DDP averages then add up to the gradient of the global mean, however the masks fall.
    """
    sums = loss_sums(student_states, teacher_states, attention_mask, labels, student_logits, teacher_logits, temperature)
    losses = {}
    for name, (total, count) in sums.items():
        if masked_count is not None and name != "hidden":
            count = masked_count
        losses[name] = total / torch.as_tensor(count, dtype=total.dtype, device=total.device).clamp(min=1)
    return losses


def total_loss(losses, args):
    weights = {"hidden": args.hidden_weight, "mlm_kd": args.mlm_kd_weight, "mlm": args.mlm_weight}
    return sum(weights[name] * value for name, value in losses.items())


# ---------------------------------------------------------------------------------------------
# Layer matching and the student


def default_num_blocks(metadata, teacher_layers, num_slots):
    """The search space's `num_blocks` from `nasbert.json` when it fits this teacher and student,
    else the largest K dividing both the teacher's layers and the student's slots."""
    searched = ((metadata or {}).get("search") or {}).get("space", {}).get("num_blocks")
    if searched and searched <= teacher_layers and num_slots % searched == 0:
        return int(searched)
    return math.gcd(teacher_layers, num_slots)


def matched_layers(num_slots, num_blocks):
    """Student hidden-state indices matched to teacher block boundaries 1..num_blocks
    (`hidden_states[i]` is the output of slot i; index 0 is the embedding output)."""
    if not 1 <= num_blocks <= num_slots or num_slots % num_blocks:
        raise ValueError(
            f"num_blocks={num_blocks} must divide the student's {num_slots} slots (valid: "
            f"{[k for k in range(1, num_slots + 1) if num_slots % k == 0]})."
        )
    step = num_slots // num_blocks
    return [k * step for k in range(1, num_blocks + 1)]


class DistillationStudent(nn.Module):
    """A `NasBertForMaskedLM` plus one projection (student width -> teacher width) per matched layer.

    `forward` returns the projected hidden states at `student_layers` and, with `labels` and
    `compute_logits`, the vocabulary logits at the masked positions.
    """

    def __init__(self, model, teacher_hidden_size, student_layers, compute_logits=True):
        super().__init__()
        self.model = model
        self.student_layers = list(student_layers)
        self.compute_logits = compute_logits
        # hidden_states[i] is the output of slot i (index 0: the embedding projection, at slot 0's width).
        widths = list(model.config.slot_hidden_sizes)
        self.widths = [widths[max(i, 1) - 1] for i in self.student_layers]
        self.projections = nn.ModuleList(nn.Linear(width, teacher_hidden_size) for width in self.widths)
        for projection in self.projections:
            nn.init.normal_(projection.weight, std=model.config.initializer_range)
            nn.init.zeros_(projection.bias)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        outputs = self.model.nasbert(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, output_hidden_states=True,
            return_dict=True,
        )
        states = [projection(outputs.hidden_states[i]) for projection, i in zip(self.projections, self.student_layers)]
        logits = None
        if self.compute_logits and labels is not None:
            logits = self.model.cls(outputs.last_hidden_state[labels != -100])
        return states, logits


def init_projections(student, supernet_run=None):
    """Start the projections where the search left them; returns where they came from.

    From a supernet run: block k's output projection (leading columns for the student's width),
    which maps exactly this block's output onto the teacher's boundary k (the fixed
    principal-component map of a `pca` run, or the one trained with the block). Else
    from the MLM head's dense layer when it maps the student's width to the teacher's (the
    export puts the last block's output projection there). Else the default initialisation.
    """
    teacher_hidden = student.projections[0].out_features
    with torch.no_grad():
        if supernet_run is not None:
            weights = _supernet_output_projections(supernet_run, len(student.projections))
            for projection, hidden, (weight, bias) in zip(student.projections, student.widths, weights):
                if weight.shape[0] != teacher_hidden or weight.shape[1] < hidden:
                    raise ValueError(
                        f"Supernet run {supernet_run} projects to width {weight.shape[0]} from at most {weight.shape[1]}; "
                        f"this student needs {hidden} -> {teacher_hidden}: it is not the run this model was searched in."
                    )
                projection.weight.copy_(weight[:, :hidden])
                projection.bias.copy_(bias)
            return f"supernet:{supernet_run}"
        dense = student.model.cls.dense
        if all((dense.in_features, dense.out_features) == (hidden, teacher_hidden) for hidden in student.widths):
            for projection in student.projections:
                projection.load_state_dict(dense.state_dict())
            return "mlm_head.dense"
    return "random"


def _supernet_output_projections(run_dir, num_blocks):
    path = Path(run_dir) / SUPERNET_WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --supernet-run must be a finished supernet run folder.")
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        names = [f"blocks.{k}.output_projection" for k in range(num_blocks)]
        if not all(f"{name}.weight" in keys for name in names) or f"blocks.{num_blocks}.output_projection.weight" in keys:
            blocks = len({key.split(".")[1] for key in keys if key.startswith("blocks.")})
            raise ValueError(f"Supernet run {run_dir} has {blocks} blocks; this distillation matches {num_blocks} layers.")
        return [(handle.get_tensor(f"{name}.weight"), handle.get_tensor(f"{name}.bias")) for name in names]


DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def load_student(model_dir, dropout=None):
    """The `NasBertForMaskedLM` of an exported folder and its `nasbert.json` (None when absent).

    With `dropout`, the modules are built with that dropout while the config keeps the model's
    own values, so that the saved model fine-tunes with its original dropout.
    """
    from .modeling import NasBertForMaskedLM
    config_path = Path(model_dir) / CONFIG_FILE
    model_type = read_json(config_path).get("model_type") if config_path.is_file() else None
    if model_type not in (None, NasBertForMaskedLM.config_class.model_type):
        raise ValueError(
            f"{model_dir} holds a {model_type!r} model; distillation takes NasBert models (`nasbert search` exports, "
            "or a BERT turned into one with `nasbert convert`)."
        )
    model_dir = check_model_dir(model_dir)
    check_model_weights(model_dir)
    metadata = read_metadata(model_dir)
    if dropout is None:
        return _check_materialised(NasBertForMaskedLM.from_pretrained(model_dir), model_dir), metadata
    model = NasBertForMaskedLM.from_pretrained(model_dir, **{name: dropout for name in DROPOUT_FIELDS})
    saved = read_json(model_dir / CONFIG_FILE)
    for name in DROPOUT_FIELDS:
        setattr(model.config, name, saved.get(name, getattr(model.config, name)))
    return _check_materialised(model, model_dir), metadata


def _check_materialised(model, model_dir):
    """Refuse a model with parameters left on the meta device: loading a folder without an MLM
    head (a bare `NasBertModel`) as `NasBertForMaskedLM` leaves the tied decoder bias there, and
    the first forward pass would fail far from the cause."""
    missing = [name for name, parameter in model.named_parameters() if parameter.is_meta]
    if missing:
        raise ValueError(
            f"{model_dir} has no weights for {', '.join(missing)}: distillation needs a model with its MLM head "
            "(an export of `nasbert search`, or `nasbert convert` of the BERT, which adds one)."
        )
    return model


def check_compatible(model, teacher, seq_len):
    if model.config.vocab_size != teacher.vocab_size:
        raise ValueError(
            f"The student's vocabulary ({model.config.vocab_size} tokens) differs from teacher {teacher.name!r}'s "
            f"({teacher.vocab_size}): distillation feeds both the same token ids; use the teacher the model was "
            "exported from."
        )
    if seq_len > model.config.max_position_embeddings:
        raise ValueError(
            f"seq_len={seq_len} exceeds the student's max_position_embeddings={model.config.max_position_embeddings}."
        )


# ---------------------------------------------------------------------------------------------
# The run


def distill(args):
    """Distil `args.model` against the teacher on the corpus; returns the distilled model folder."""
    from .teacher import load_teacher

    if not args.model:
        raise ValueError("model is required: the exported model folder to distil (e.g. nasbert-out/nasbert-5M).")
    output_dir, run_dir = args.resolved_output_dir(), args.resolved_run_dir()
    # The model's own folder is replaced in place; any other model only by resuming this run.
    check_output_folder(output_dir, "distill", updates=args.model,
                        resumable=lambda folder: args.resume and (run_dir / DISTILL_CONFIG).is_file())
    model, metadata = load_student(args.model, args.dropout)
    accelerator = make_accelerator(args, run_dir)
    teacher = load_teacher(args.teacher or (metadata or {}).get("teacher"), device=accelerator.device)  # None: the default
    check_compatible(model, teacher, args.seq_len)
    check_global_batches(args, accelerator.num_processes)
    set_seed(args.seed)  # the same projections on every process
    student, matching = build_student(args, model, metadata, teacher)
    run_config = _run_config(args, teacher, model, matching, accelerator)
    checkpoint = check_run_dir(args, run_dir, DISTILL_CONFIG, "distillation run", "another --run-dir",
                               lambda saved: _check_same_run(saved, run_config, args.model, run_dir), accelerator)
    train_loader, eval_loader = mlm_dataloaders(args, teacher, accelerator, masked=run_config["masked_inputs"])
    write_run_config(run_dir, DISTILL_CONFIG, run_config, _announce(run_config, checkpoint), accelerator)

    optimizer, scheduler = _optimizer(args, student, accelerator.device)
    prepared, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        student, optimizer, train_loader, eval_loader, scheduler
    )
    loop = DistillationLoop(args, accelerator, prepared, optimizer, scheduler, teacher, train_loader, eval_loader,
                            run_dir, num_blocks=matching["num_blocks"])
    state = loop.start({"step": 0}, checkpoint, {"model": str(args.model), "seed": args.seed})
    initial = loop.initial_validation(state["step"])
    loop.run(state)
    final = loop.validate()
    if accelerator.is_main_process:
        record = _distillation_record(args, run_config, state["step"], loop.last_losses, initial, final)
        _save_distilled(accelerator.unwrap_model(prepared).model, teacher, metadata, record, output_dir)
        accelerator.print(f"Distilled model written to {output_dir}: validation {_describe(initial)} -> {_describe(final)}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output_dir


def build_student(args, model, metadata, teacher):
    """The `DistillationStudent` of `model` with initialised projections, and the layer matching
    `{num_blocks, student_layers, teacher_layers, projections_init}`."""
    num_slots = len(model.config.layers)
    num_blocks = args.num_blocks or default_num_blocks(metadata, teacher.num_layers, num_slots)
    student_layers = matched_layers(num_slots, num_blocks)
    teacher_layers = teacher.block_boundaries(num_blocks)[1:]
    logits = uses_masked_inputs(args, teacher)  # the MLM terms need logits at the masked positions
    student = DistillationStudent(model, teacher.hidden_size, student_layers, compute_logits=logits)
    matching = {"num_blocks": num_blocks, "student_layers": student_layers, "teacher_layers": teacher_layers,
                "projections_init": init_projections(student, args.supernet_run)}
    return student, matching


def uses_masked_inputs(args, teacher):
    """Whether the batches are BERT-masked: only an MLM term needs masked positions. The hidden-state
    term alone compares both models on the text itself; on masked text it cost teacher-initialised
    students 2 to 6 points of the teacher's sentence geometry (docs/distillation.md)."""
    return uses_soft_labels(args, teacher) or args.mlm_weight > 0


def uses_soft_labels(args, teacher):
    """Whether the soft-label MLM KD term is on: the teacher has an MLM head and the term a weight."""
    return teacher.mlm_head is not None and args.mlm_kd_weight > 0


def _optimizer(args, student, device):
    from transformers import get_scheduler

    # The fused AdamW kernel: on CPU the default per-tensor loop costs more than the whole
    # forward and backward pass of a small student (its embeddings alone are ~12M parameters).
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(parameter_groups(student, args.weight_decay), lr=args.learning_rate, fused=fused)
    return optimizer, get_scheduler(args.lr_scheduler_type, optimizer, args.warmup_steps, args.max_steps)


class DistillationLoop(TrainingLoop):
    """Each step: one teacher pass, one student pass, the three losses, an optimizer step. The
    model is validated before and after (`initial_validation`, `validate`)."""

    name = "distill"

    def __init__(self, *args, num_blocks, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_blocks, self.use_kd = num_blocks, uses_soft_labels(self.args, self.teacher)
        self.loss_names = None  # the terms `train_step` returns after the total

    def outputs(self, batch):
        """One teacher and one student pass: `(student states, teacher states, student logits,
        teacher logits)`, states pairwise matched, logits at the masked positions."""
        labels = batch["labels"]
        teacher_states = self.teacher.block_states(batch["input_ids"], batch["attention_mask"], self.num_blocks)
        teacher_logits = None
        if self.use_kd:
            with torch.no_grad():
                teacher_logits = self.teacher.mlm_head(teacher_states[-1][labels != -100])
        states, logits = self.model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), labels)
        return states, teacher_states[1:], logits, teacher_logits

    def train_step(self, batch, state):
        accelerator = self.accelerator
        # Every process averages the MLM terms over the global number of masked positions.
        local = (batch["labels"] != -100).sum().float()
        masked_count = accelerator.reduce(local, "sum") / accelerator.num_processes
        with accelerator.autocast():
            states, teacher_states, logits, teacher_logits = self.outputs(batch)
            losses = distillation_losses(states, teacher_states, batch["attention_mask"], batch["labels"], logits,
                                         teacher_logits, self.args.temperature, masked_count)
            loss = total_loss(losses, self.args)
        accelerator.backward(loss)
        if self.args.max_grad_norm:
            accelerator.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_names = list(losses)
        return torch.stack([loss.detach()] + [value.detach() for value in losses.values()])

    def log_values(self, losses):
        return {"loss": losses[0], **{f"loss/{name}": value for name, value in zip(self.loss_names, losses[1:])}}

    def save(self, state):
        with _quiet_tied_weights():
            super().save(state)

    @torch.no_grad()
    def validate(self):
        """Each term's mean (and the weighted total) over the first `eval_batches` validation batches."""
        totals = {}
        # The same masked batches every time: a prepared loader would advance its epoch (and so
        # its masks) after each full pass, and restart from 0 in a resumed run.
        self.eval_loader.set_epoch(0)
        self.model.eval()
        with self.accelerator.autocast():
            for index, batch in enumerate(self.eval_loader):
                if index >= self.args.eval_batches:
                    break
                states, teacher_states, logits, teacher_logits = self.outputs(batch)
                sums = loss_sums(states, teacher_states, batch["attention_mask"], batch["labels"], logits,
                                 teacher_logits, self.args.temperature)
                for name, (total, count) in sums.items():
                    previous = totals.get(name, (0.0, 0.0))
                    totals[name] = (previous[0] + total, previous[1] + count)
        self.model.train()
        losses = {}
        for name, (total, count) in totals.items():
            reduced = self.accelerator.reduce(torch.stack([total, count]), "sum")
            losses[name] = (reduced[0] / reduced[1].clamp(min=1)).item()
        losses["total"] = total_loss(losses, self.args)
        return losses

    def initial_validation(self, step):
        """Validation losses of the model as it came in (computed once; a resumed run reads them back)."""
        path = self.run_dir / INITIAL_VALIDATION
        if step > 0:
            return read_json(path) if path.is_file() else None
        losses = self.validate()
        if self.accelerator.is_main_process:
            write_json(path, losses)
        return losses


@contextmanager
def _quiet_tied_weights():
    """Drop Accelerate's "Removed shared tensor" warning at each checkpoint: the decoder is tied to
    the word embeddings on purpose, and `load_state` restores the tie (the resume tests check it)."""
    logger = logging.getLogger("accelerate.utils.other")

    def drop(record):
        return "Removed shared tensor" not in record.getMessage()

    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


# -- setup and outputs ---------------------------------------------------------------------------


# Identity paths stored relative to the run folder: a run folder moved or copied together with the
# model and the supernet run (as `nasbert compress` lays them out) still resumes.
RELATIVE_PATHS = ("model", "supernet_run")


def _run_config(args, teacher, model, matching, accelerator):
    from .architecture import Architecture

    identity = asdict(args)
    run_dir = args.resolved_run_dir()
    for name in RELATIVE_PATHS:
        if identity[name] is not None:
            identity[name] = os.path.relpath(Path(identity[name]).resolve(), run_dir.resolve())
    identity["teacher"] = teacher.name
    return {
        "architecture": str(Architecture.from_config(model.config)),
        "teacher": teacher.name,
        "teacher_has_mlm_head": teacher.mlm_head is not None,
        **matching,
        "training": identity,
        "num_processes": accelerator.num_processes,
        "masked_inputs": uses_masked_inputs(args, teacher),
    }


def _check_same_run(saved, current, model, run_dir):
    if saved.get("architecture") != current["architecture"]:
        raise ValueError(
            f"--resume: the run distils {saved.get('architecture')}, {model} is {current['architecture']}; "
            "resume with the run's model (or use another --run-dir)."
        )
    check_same_arguments(saved, current, RUN_IDENTITY, "use another --run-dir", partial(_same_value, run_dir=run_dir))
    check_same_inputs(saved, current, "use another --run-dir")


def _same_value(name, saved, current, run_dir):
    """Whether a saved identity value is the current one. Paths are compared by the location they
    name, relative to the run folder (older runs stored absolute paths, which still compare); a
    saved location that no longer exists (a run folder copied without the model) matches any, the
    architecture check standing in for it."""
    if name in RELATIVE_PATHS and saved is not None and current is not None:
        location = run_dir / saved
        return not location.exists() or location.resolve() == (run_dir / current).resolve()
    return same_value(name, saved, current)


def _announce(run_config, checkpoint):
    return (
        f"Distilling {run_config['architecture']} from {run_config['teacher']}: student layers "
        f"{run_config['student_layers']} -> teacher layers {run_config['teacher_layers']}"
        + (f"; resuming from {checkpoint}" if checkpoint is not None else "")
    )


def _distillation_record(args, run_config, steps, train_losses, initial, final):
    return {
        "steps": steps,
        "teacher": run_config["teacher"],
        "corpus": args.corpus or "embedded Wikipedia sample",
        "num_blocks": run_config["num_blocks"],
        "student_layers": run_config["student_layers"],
        "teacher_layers": run_config["teacher_layers"],
        "weights": {"hidden": args.hidden_weight, "mlm_kd": args.mlm_kd_weight, "mlm": args.mlm_weight},
        "temperature": args.temperature,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "projections_init": run_config["projections_init"],
        "train_losses": train_losses,
        "validation_before": initial,
        "validation_after": final,
    }


def _save_distilled(model, teacher, metadata, record, output_dir):
    from .architecture import Architecture
    from .export import model_metadata, save_model_folder

    if metadata is None:
        metadata = model_metadata(Path(output_dir).resolve().name, Architecture.from_config(model.config), model.config)
    save_model_folder(model, teacher.tokenizer, {**metadata, "distillation": record}, output_dir)


def _describe(losses):
    if losses is None:
        return "unknown"
    return ", ".join(f"{name} {value:.4f}" for name, value in losses.items())


# ---------------------------------------------------------------------------------------------
# The main job's last stage


# Set by `distill_exported` for each model; an options dict must not set them too.
EXPORTED_FIELDS = ("model", "output_dir", "run_dir", "max_steps", "resume")


def check_distill_options(options):
    """Raise `ValueError` naming the options `distill_exported` cannot take: unknown fields, the ones
    it sets itself (the number of steps is its `steps` argument, e.g. `--distill-steps`), and bad
    values (`DistillArguments` validation). `nasbert compress` calls it before the supernet trains."""
    unknown = sorted(set(options) - {field.name for field in fields(DistillArguments)})
    if unknown:
        raise ValueError(f"Unknown distillation arguments {unknown} (valid: the fields of DistillArguments).")
    reserved = sorted(set(options) & set(EXPORTED_FIELDS))
    if reserved:
        raise ValueError(
            f"Distillation options {reserved} are set per exported model; pass the number of steps as `steps` "
            "(a config's `distill: max_steps`, or --distill-steps)."
        )
    DistillArguments(**options)


def distilled_steps(model_dir):
    """Steps the model in `model_dir` was distilled for (0 when it was not)."""
    metadata = read_metadata(model_dir) or {}
    return int((metadata.get("distillation") or {}).get("steps", 0))


def distill_exported(out, names, steps, **options):
    """Distil every exported model `OUT/<name>` in place for `steps` steps (`nasbert compress`).

    Resumable: a model already distilled for `steps` is skipped, and an interrupted run continues
    from its last checkpoint in `OUT/distill-runs/<name>/`. `options` are `DistillArguments`
    fields (corpus, seq_len, batch_size, cpu, supernet_run...).
    """
    check_distill_options(options)
    out = Path(out)
    for name in names:
        folder = out / name
        if distilled_steps(folder) >= steps:
            logger.info("%s is already distilled for %d steps; skipping.", folder, steps)
            continue
        run_dir = out / RUNS_SUBDIR / name
        args = DistillArguments(model=str(folder), output_dir=str(folder), run_dir=str(run_dir), max_steps=steps,
                                **options)
        args.resume = (run_dir / DISTILL_CONFIG).is_file()
        distill(args)
        # The distilled folder now records its steps (the skip test above): the optimizer
        # state is no longer needed, and it is several times the model's size.
        shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
