"""Supernet training: block-wise distillation with progressive shrinking, driven by Accelerate.

`train_supernet(args)` runs the whole stage and writes the run folder:

    RUN_DIR/run_config.json        search space, teacher, corpus, seq_len, training arguments, seed
    RUN_DIR/checkpoints/step-N/    resumable state (Accelerate state + trainer_state.json), atomic
    RUN_DIR/log.jsonl              losses, learning rate and pool sizes (the "jsonl" tracker)
    RUN_DIR/supernet.safetensors   final supernet weights
    RUN_DIR/candidates.json        surviving candidates per block with final validation losses

The same code runs on one CPU, on several CPU processes (`torchrun --standalone --nproc_per_node 2`, gloo)
and on many GPUs with mixed precision. `batch_size` is the global batch: Accelerate splits each
batch over the processes (`split_batches`), so a run gives the same result on any number of
processes. Runs are deterministic given the seed, also across a kill and `--resume`:
sub-architectures are drawn from generators seeded by (seed, step, block), batches are a
function of (seed, epoch, position) (see `data.py`), and the global RNG (dropout) is reseeded
from (seed, step, process) at every step.
"""

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from accelerate.utils import set_seed

from .arguments import read_config
from .blockwise import distillation_step
from .folders import CANDIDATES_FILE, RUN_CONFIG_FILE, SUPERNET_WEIGHTS_FILE, write_json
from .search_space import check_against_teacher, load_search_space
from .shrinking import (
    ShrinkingConfig,
    candidates_table,
    initial_pools,
    pools_from_table,
    sample_block_archs,
    sample_embedding,
    score_embeddings,
    score_pool,
    shrink_pool,
)
from .supernet import Supernet, check_block_projection
from .training import (
    LoopArguments,
    TrainingLoop,
    check_at_least_one,
    check_global_batches,
    check_run_dir,
    check_same_arguments,
    check_same_inputs,
    make_accelerator,
    mlm_dataloaders,
    parameter_groups,
    same_value,
    write_run_config,
)

PCA_BASES = ("shared", "shared-whitened", "per-boundary")

# Arguments that define the run; a resumed run must keep them (others, like max_steps, may change).
# The search space and the teacher too: `_check_same_run` compares them as the run config records them.
RUN_IDENTITY = (
    "corpus", "seq_len", "batch_size", "seed", "learning_rate", "weight_decay", "dropout", "validation_size",
    "max_train_sequences", "pool_size", "num_bins", "drop_fraction", "min_per_bin", "shrink_every",
    "eval_batch_size", "eval_batches", "block_projection", "projection_batches", "pca_basis",
)


@dataclass
class SupernetTrainingArguments(LoopArguments):
    """Arguments of `train_supernet` (and of `recipes/train_supernet.py`, `nasbert supernet`)."""

    output_dir: Optional[str] = field(default=None, metadata={"help": "Run folder (RUN_DIR) to write."})
    search_space: str = field(default="tiny", metadata={"help": "Preset name (tiny, small, base) or a YAML/JSON file."})
    teacher: Optional[str] = field(
        default=None, metadata={"help": "Teacher folder or Hub name (default: all-MiniLM-L6-v2)."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Per-block gradient clipping (0: off)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout inside the supernet ops."})
    eval_batches: int = field(default=2, metadata={"help": "Validation batches that score each candidate."})
    pool_size: int = field(default=96, metadata={"help": "Candidates per block at the start."})
    num_bins: int = field(default=2, metadata={"help": "Parameter-count bins per hidden size."})
    shrink_every: int = field(default=50, metadata={"help": "Steps between shrinks."})
    drop_fraction: float = field(default=0.5, metadata={"help": "Fraction of each bin dropped per shrink."})
    min_per_bin: int = field(default=2, metadata={"help": "Candidates every bin keeps."})
    block_projection: str = field(
        default="pca",
        metadata={
            "help": "Block projections: teacher (the identity: blocks at the teacher's width in its coordinates, "
            "every op starting as the teacher's sub-layer), pca (fixed, from the teacher's principal components, so "
            "narrower blocks chain into whole models) or learned (trained with each block)."
        },
    )
    pca_basis: str = field(
        default="shared",
        metadata={"help": "Coordinates of the pca projections: shared (one rotation for every block boundary and one "
                          "scale per boundary, so residual paths and LayerNorms act as they do in the teacher), "
                          "shared-whitened (the same rotation, unit variance per direction) or per-boundary (each "
                          "boundary's own whitened principal directions, the first design)."},
    )
    projection_batches: int = field(
        default=8, metadata={"help": "Training batches whose teacher states fit the pca projections."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.shrinking()  # validates the shrinking fields
        check_at_least_one(self, "projection_batches")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1).")
        check_block_projection(self.block_projection)
        if self.pca_basis not in PCA_BASES:
            raise ValueError(f"pca_basis={self.pca_basis!r}: expected one of {', '.join(PCA_BASES)}.")

    def shrinking(self):
        return ShrinkingConfig(self.pool_size, self.num_bins, self.shrink_every, self.drop_fraction, self.min_per_bin)

    @classmethod
    def from_config(cls, search_space="tiny", **overrides):
        """Arguments from a preset/config file's `training` section, then `overrides` (None = not given)."""
        values = read_config(search_space).section("training", fields_of=cls)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(search_space=str(search_space), **values)


def train_supernet(args):
    """Train the supernet of `args.search_space`; returns the run folder (see the module doc)."""
    if not args.output_dir:
        raise ValueError("output_dir is required: the run folder to write (e.g. --out runs/supernet).")
    run_dir = Path(args.output_dir)
    accelerator = make_accelerator(args, run_dir)
    from .teacher import load_teacher

    teacher = load_teacher(args.teacher, device=accelerator.device)
    space = load_search_space(args.search_space, teacher.model.config)
    check_against_teacher(space, teacher)
    check_global_batches(args, accelerator.num_processes)
    run_config = _run_config(args, space, teacher, accelerator)
    checkpoint = check_run_dir(args, run_dir, RUN_CONFIG_FILE, "supernet run", "another output folder",
                               lambda saved: _check_same_run(saved, run_config), accelerator)
    # Block-wise hidden-state losses only: the blocks see the text itself, not BERT-masked text.
    train_loader, eval_loader = mlm_dataloaders(args, teacher, accelerator, masked=False)
    resuming = f"\nResuming from {checkpoint}" if checkpoint is not None else ""
    write_run_config(run_dir, RUN_CONFIG_FILE, run_config, f"Search space: {space.describe()}{resuming}", accelerator)

    set_seed(args.seed)  # the same initial supernet on every process
    supernet = Supernet(space, **run_config["supernet"])
    optimizer = torch.optim.AdamW(parameter_groups(supernet, args.weight_decay), lr=args.learning_rate)
    from transformers import get_scheduler

    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, args.warmup_steps, args.max_steps)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        supernet, optimizer, train_loader, eval_loader, scheduler
    )
    loop = SupernetLoop(args, accelerator, model, optimizer, scheduler, teacher, train_loader, eval_loader, run_dir)
    fresh = {"step": 0, "pools": initial_pools(space, args.shrinking(), args.seq_len, args.seed)}
    state = loop.start(fresh, checkpoint, {"search_space": args.search_space, "seed": args.seed})
    if checkpoint is None and args.block_projection == "teacher":
        _start_from_teacher(args, accelerator, supernet, teacher, train_loader)
    elif checkpoint is None and args.block_projection == "pca":
        _fit_projections(args, accelerator, supernet, teacher, train_loader)
    loop.run(state)
    loop.finish(state)
    accelerator.end_training()
    return run_dir


class SupernetLoop(TrainingLoop):
    """Each step samples one path per block and distils every block on it; the pools shrink on
    schedule; `finish` writes the final outputs. `state` also holds the pools."""

    name = "supernet"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supernet = self.accelerator.unwrap_model(self.model)
        self.eval_steps = set(self.args.shrinking().shrink_steps(self.args.max_steps))

    def train_step(self, batch, state):
        args, step = self.args, state["step"]
        block_archs = sample_block_archs(state["pools"], args.seed, step)
        # A supernet in teacher coordinates keeps its (factorised teacher) embedding fixed.
        trained = self.supernet.embedding_candidates() if self.supernet.trains_embedding else []
        embedding = sample_embedding(trained, args.seed, step)
        return distillation_step(
            self.accelerator, self.model, self.teacher, batch, self.optimizer, self.scheduler, block_archs,
            args.max_grad_norm, embedding,
        )

    def log_values(self, losses):
        names = [f"block_{b}" for b in range(len(self.supernet.blocks))] + ["embedding"]
        return {**{f"loss/{name}": loss for name, loss in zip(names, losses)}, "loss": sum(losses)}

    def checkpoint_state(self, state):
        return {"step": state["step"], "pools": candidates_table(state["pools"])}

    def restore_state(self, saved):
        return {"step": saved["step"], "pools": pools_from_table(saved["pools"])}

    # -- shrinking -----------------------------------------------------------------------------

    def _score(self, pools):
        """Set the validation loss of every candidate of every pool."""
        eval_states = self._eval_states()
        reduce = (lambda sums: self.accelerator.reduce(sums, "sum")) if self.accelerator.num_processes > 1 else None
        self.supernet.eval()
        with self.accelerator.autocast():
            for block, pool in enumerate(pools):
                score_pool(self.supernet, block, pool, eval_states, reduce)
            embeddings = score_embeddings(self.supernet, eval_states, reduce)
        self.supernet.train()
        return embeddings

    @torch.no_grad()
    def _eval_states(self):
        states = []
        num_blocks = len(self.supernet.blocks)
        # Always the same validation batches and masks (the masks depend on the epoch).
        self.eval_loader.set_epoch(0)
        with self.accelerator.autocast():
            for index, batch in enumerate(self.eval_loader):
                if index >= self.args.eval_batches:
                    break
                hidden = self.teacher.block_states(batch["input_ids"], batch["attention_mask"], num_blocks)
                states.append((hidden, batch["attention_mask"], batch["input_ids"]))
        return states

    def evaluate(self, state):
        """Shrink: score every candidate on the validation batches and drop the worst of each bin."""
        self._score(state["pools"])
        shrinking = self.args.shrinking()
        state["pools"] = [shrink_pool(pool, shrinking.drop_fraction, shrinking.min_per_bin) for pool in state["pools"]]
        sizes = {f"pool/block_{b}": len(pool) for b, pool in enumerate(state["pools"])}
        self.accelerator.log(sizes, step=state["step"])

    # -- outputs -------------------------------------------------------------------------------

    def finish(self, state):
        """Score the final pools (and the embedding choices) once more and write `candidates.json`
        and `supernet.safetensors`."""
        embeddings = self._score(state["pools"])
        if self.accelerator.is_main_process:
            write_json(self.run_dir / CANDIDATES_FILE, candidates_table(state["pools"], embeddings))
            self.supernet.save(self.run_dir / SUPERNET_WEIGHTS_FILE)
        self.accelerator.wait_for_everyone()


# -- setup -------------------------------------------------------------------------------------


def _start_from_teacher(args, accelerator, supernet, teacher, train_loader):
    """Start every op from the teacher sub-layer it replaces, heads and neurons ranked on the first
    `projection_batches` training batches of epoch 0, and the embedding from the teacher's with its
    word table factorised by the token counts of the whole of epoch 0 (`teacher_init.py`); sums
    run over processes, so every process count starts from the same supernet."""
    from .teacher_init import corpus_token_counts, start_from_teacher, teacher_importance

    reduce_sum = lambda tensor: accelerator.reduce(tensor, "sum")  # noqa: E731
    train_loader.set_epoch(0)
    batches = list(itertools.islice(train_loader, args.projection_batches))
    with accelerator.autocast():
        importance = teacher_importance(teacher, batches, reduce_sum=reduce_sum)
    counts = corpus_token_counts(train_loader, teacher.vocab_size, reduce_sum=reduce_sum)
    start_from_teacher(supernet, teacher, importance, counts)


def _fit_projections(args, accelerator, supernet, teacher, train_loader):
    """Fit the fixed block projections on the first `projection_batches` training batches of epoch 0
    (moments summed over processes, so every process and any process count get the same maps) and
    start the searched embedding from the teacher's; the ops start at random."""
    from .projections import fit_boundary_bases

    train_loader.set_epoch(0)
    batches = list(itertools.islice(train_loader, args.projection_batches))
    reduce_sum = lambda tensor: accelerator.reduce(tensor, "sum")  # noqa: E731
    with accelerator.autocast():
        # Bases at every teacher layer; the block boundaries are some of them.
        layer_bases = fit_boundary_bases(teacher, batches, teacher.num_layers, supernet.projection_rows,
                                         reduce_sum=reduce_sum, shared=args.pca_basis != "per-boundary",
                                         whiten=args.pca_basis != "shared")
    bases = [layer_bases[layer] for layer in teacher.block_boundaries(len(supernet.blocks))]
    supernet.fit_projections(bases)
    supernet.init_embeddings(teacher, bases)


def _run_config(args, space, teacher, accelerator):
    return {
        "search_space": space.to_dict(),
        "search_space_size": space.size(),
        "teacher": teacher.name,
        "teacher_block_boundaries": teacher.block_boundaries(space.num_blocks),
        "corpus": args.corpus,
        "seq_len": args.seq_len,
        "seed": args.seed,
        "training": asdict(args),
        "supernet": {
            "teacher_hidden_size": teacher.hidden_size,
            **teacher.layer_settings(),
            "dropout": args.dropout,
            "initializer_range": 0.02,
            "block_projection": args.block_projection,
            **(teacher.embedding_dimensions() if space.embedding_sizes else {}),  # a searched embedding keeps them
        },
        "num_processes": accelerator.num_processes,
        "masked_inputs": False,
    }


def _check_same_run(saved, current):
    saved_space, current_space = saved.get("search_space"), current["search_space"]
    if saved_space != current_space:
        raise ValueError(f"--resume: the run's search space {saved_space} differs from the requested {current_space}.")
    if not same_value("teacher", saved.get("teacher"), current["teacher"]):
        raise ValueError(f"--resume: the run's teacher {saved.get('teacher')!r} differs from {current['teacher']!r}.")
    check_same_arguments(saved, current, RUN_IDENTITY, "start a new run folder")
    check_same_inputs(saved, current, "start a new run folder")
