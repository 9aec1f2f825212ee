"""Progressive search-space shrinking (NAS-BERT, section 3.3).

Each block keeps a pool of candidates (a hidden size plus the ops of the block's slots): every
candidate of the block when there are few, else a uniform sample. On a schedule the pool is
scored by block validation loss and the worst are dropped, *within bins*: candidates are
binned per hidden size by parameter count (quantiles fixed when the pool is made), and every
bin keeps its best `min_per_bin`, so that small and large candidates both survive (a plain
"drop the worst" would keep only the largest, which always distil best). Binning per hidden
size also keeps every hidden size alive in every block, so the model-wise search can always
assemble a whole architecture (one hidden size for all blocks) from the surviving pools.

Training samples the sub-architecture of each block from its surviving pool. The pools after
the last shrink are scored once more at the end of training and saved as `candidates.json`.
"""

import math
import random
from collections import defaultdict
from dataclasses import dataclass

import torch

from .architecture import Architecture
from .cost import op_flops, op_params
from .folders import read_json


@dataclass
class Candidate:
    """One block candidate with its costs, its parameter-count bin and its last validation loss."""

    arch: Architecture
    params: int
    flops: int
    bin: int = 0
    loss: float | None = None

    @classmethod
    def of(cls, arch, seq_len, bin=0):
        params = sum(op_params(code, arch.hidden_size) for code in arch.layers)
        flops = sum(op_flops(code, arch.hidden_size, seq_len) for code in arch.layers)
        return cls(arch, params, flops, bin)

    def to_dict(self):
        return {**self.arch.to_dict(), "loss": self.loss, "params": self.params, "flops": self.flops, "bin": self.bin}

    @classmethod
    def from_dict(cls, data):
        return cls(Architecture.from_dict(data), data["params"], data["flops"], data.get("bin", 0), data.get("loss"))


@dataclass(frozen=True)
class EmbeddingCandidate:
    """One embedding choice: width `embedding_size` projected to block 0's `hidden_size`, with the
    validation loss of that embedding against the teacher's embedding output."""

    embedding_size: int
    hidden_size: int
    loss: float

    def to_dict(self):
        return {"embedding_size": self.embedding_size, "hidden_size": self.hidden_size, "loss": self.loss}

    @classmethod
    def from_dict(cls, row):
        return cls(int(row["embedding_size"]), int(row["hidden_size"]), float(row["loss"]))


@dataclass
class ShrinkingConfig:
    """`pool_size` candidates per block at the start (split evenly over hidden sizes),
    `num_bins` parameter-count bins per hidden size; every `shrink_every` steps each bin drops
    `drop_fraction` of its candidates (the worst) but keeps at least `min_per_bin`."""

    pool_size: int = 96
    num_bins: int = 2
    shrink_every: int = 50
    drop_fraction: float = 0.5
    min_per_bin: int = 2

    def __post_init__(self):
        for name in ("pool_size", "num_bins", "shrink_every", "min_per_bin"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1.")
        if not 0.0 <= self.drop_fraction < 1.0:
            raise ValueError(f"drop_fraction={self.drop_fraction} must be in [0, 1).")

    def shrink_steps(self, max_steps):
        """Steps after which the pools shrink (not the last step: the end scores the final pools)."""
        return list(range(self.shrink_every, max_steps, self.shrink_every))


def assign_bins(candidates, num_bins):
    """Set `bin` on candidates of ONE hidden size: parameter-count quantiles, equal counts in one bin."""
    ordered = sorted(candidates, key=lambda c: c.params)
    first_rank = {}
    for rank, candidate in enumerate(ordered):
        first_rank.setdefault(candidate.params, rank)
    for candidate in candidates:
        candidate.bin = min(num_bins - 1, first_rank[candidate.params] * num_bins // len(candidates))
    return candidates


def initial_pool(space, block, config, seq_len, seed):
    """The starting pool of `block`: per hidden size, all its candidates when they fit in the
    hidden size's share of `pool_size`, else that many distinct uniform samples."""
    rng = random.Random(f"pool:{seed}:{block}")
    share = max(1, config.pool_size // len(space.hidden_sizes))
    pool = []
    for hidden in space.hidden_sizes:
        total = space.block_size(hidden)
        if total <= share:
            archs = list(space.enumerate_block(hidden))
        else:
            archs = _distinct_samples(space, hidden, share, total, rng)
        pool.extend(assign_bins([Candidate.of(arch, seq_len) for arch in archs], config.num_bins))
    return pool


def _distinct_samples(space, hidden, count, total, rng):
    if count * 2 > total:  # dense: sample from the enumeration instead of rejecting repeats
        return rng.sample(list(space.enumerate_block(hidden)), count)
    seen, archs = set(), []
    while len(archs) < count:
        arch = space.sample_block(rng, hidden)
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
    return archs


def initial_pools(space, config, seq_len, seed):
    return [initial_pool(space, block, config, seq_len, seed) for block in range(space.num_blocks)]


def sample_block_archs(pools, seed, step):
    """One candidate per block for training step `step`: uniform over the surviving pool, from a
    generator seeded by (seed, step, block), so a resumed run samples what the uninterrupted one did."""
    return [random.Random(f"sample:{seed}:{step}:{block}").choice(pool).arch for block, pool in enumerate(pools)]


def sample_embedding(choices, seed, step):
    """The embedding choice `(E, H)` trained at `step` (None without embedding search), seeded like
    `sample_block_archs`."""
    return random.Random(f"sample:{seed}:{step}:embedding").choice(choices) if choices else None


def bins_of(pool):
    """`{(hidden_size, bin): [candidates]}` in pool order."""
    groups = defaultdict(list)
    for candidate in pool:
        groups[(candidate.arch.hidden_size, candidate.bin)].append(candidate)
    return dict(groups)


def shrink_pool(pool, drop_fraction, min_per_bin):
    """The pool without the worst `drop_fraction` of each bin; every bin keeps `min_per_bin`
    (or all it has). Needs a `loss` on every candidate; ties keep the earlier candidate."""
    missing = [str(c.arch) for c in pool if c.loss is None or not math.isfinite(c.loss)]
    if missing:
        raise ValueError(f"Cannot shrink: candidates without a finite validation loss: {missing[:3]}...")
    survivors = set()
    for group in bins_of(pool).values():
        keep = max(min(min_per_bin, len(group)), len(group) - math.floor(len(group) * drop_fraction))
        survivors.update(id(c) for c in sorted(group, key=lambda c: c.loss)[:keep])
    return [c for c in pool if id(c) in survivors]


@torch.no_grad()
def score_pool(supernet, block, pool, eval_states, reduce=None):
    """Set each candidate's `loss` to its block validation MSE on `eval_states`.

    `eval_states` is a list of `(teacher block states, attention_mask)` of this process's share
    of the validation batches; `reduce` (e.g. `lambda t: accelerator.reduce(t, "sum")`) sums the
    `(squared error, count)` pairs over processes, so the loss is the exact global mean.
    """
    if not pool:
        return pool
    device = supernet.device
    sums = torch.zeros(len(pool), 2, dtype=torch.float64, device=device)
    for index, candidate in enumerate(pool):
        for states, mask, *_ in eval_states:
            sse, count = supernet.block_sse(block, candidate.arch, states[block], states[block + 1], mask)
            sums[index, 0] += sse.double()
            sums[index, 1] += count.double()
    if reduce is not None:
        sums = reduce(sums)
    for candidate, (sse, count) in zip(pool, sums.tolist()):
        candidate.loss = sse / count
    return pool


@torch.no_grad()
def score_embeddings(supernet, eval_states, reduce=None):
    """`[EmbeddingCandidate, ...]`: the validation loss of every embedding choice `(E, H)` on
    `eval_states` (`(states, mask, input_ids)` triples), summed over processes like `score_pool`."""

    choices = supernet.embedding_candidates()
    if not choices:
        return []
    device = supernet.device
    sums = torch.zeros(len(choices), 2, dtype=torch.float64, device=device)
    for index, choice in enumerate(choices):
        for states, mask, input_ids in eval_states:
            sse, count = supernet.embedding_sse(choice, input_ids, states[0], mask)
            sums[index, 0] += sse.double()
            sums[index, 1] += count.double()
    if reduce is not None:
        sums = reduce(sums)
    return [EmbeddingCandidate(size, hidden, sse / count) for (size, hidden), (sse, count) in zip(choices, sums.tolist())]


def candidates_table(pools, embeddings=()):
    """The run's `candidates.json` content: `{"blocks": [[candidate dict, ...] per block]}`, plus
    `"embeddings"` (one row per embedding choice) when the run searched the embedding width."""
    table = {"blocks": [[candidate.to_dict() for candidate in pool] for pool in pools]}
    if embeddings:
        table["embeddings"] = [embedding.to_dict() for embedding in embeddings]
    return table


def pools_from_table(table):
    return [[Candidate.from_dict(entry) for entry in block] for block in table["blocks"]]


def read_candidates(path):
    """The per-block candidate pools saved in a run's `candidates.json`."""
    return pools_from_table(read_json(path))
