"""Model-wise search: for each budget, the architecture minimising the summed block losses.

NAS-BERT approximates a whole model's quality by the sum of its blocks' validation losses, so a
model is one embedding choice (a width and block 0's hidden size) plus one surviving candidate
per block (hidden sizes may differ from block to block: the link is free), and the search is a
small knapsack. It is solved *exactly*, with no discretisation of the budget: blocks are merged
one at a time, and a partial model is dropped only when `k` others are at least as cheap and at
least as good, which can never remove one of the `k` best models under any budget. The top `k`
are then re-scored on the assembled models by the caller (see `nasbert_hf.pipeline`).
"""

import bisect
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .architecture import Architecture
from .cost import BodyParamsCost, FlopsCost, ParamsCost
from .folders import read_json
from .modeling import parse_op
from .shrinking import EmbeddingCandidate, pools_from_table

UNITS = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}


@dataclass(frozen=True)
class Budget:
    """A budget such as `params=5M` (all parameters, embeddings included, as the paper counts),
    `body_params=3M` (the op slots only), `flops=1.5G` or `latency=8ms@cpu` (device of a latency table)."""

    metric: str
    limit: float
    device: str = None

    @classmethod
    def parse(cls, text):
        match = re.fullmatch(
            r"\s*(params|body_params|flops|latency)\s*=\s*([0-9]*\.?[0-9]+)\s*([kKMGBT]?)(ms)?(?:@(\S+))?\s*", text
        )
        if not match or (match.group(1) == "latency") != bool(match.group(4)):
            raise ValueError(
                f"Cannot parse budget {text!r}: expected 'params=5M' (all parameters), 'body_params=3M' (op slots "
                "only), 'flops=2G' or 'latency=10ms@DEVICE' (DEVICE names a latency table, e.g. cpu, cuda, ort-cpu)."
            )
        metric, number, unit, _, device = match.groups()
        if metric == "latency" and not device:
            device = "cpu"
        limit = float(number) * UNITS[unit]
        if limit <= 0:
            raise ValueError(f"Budget {text!r} must be positive.")
        return cls(metric, limit, device if metric == "latency" else None)

    @property
    def name(self):
        """The exported model's name: `nasbert-5M`, `nasbert-3M-body`, `nasbert-2GFLOPs`, `nasbert-8ms-cpu`.

        Names keep every digit of the limit, so two different budgets never share a folder."""
        if self.metric == "latency":
            return f"nasbert-{self.limit:.12g}ms-{self.device}"
        suffix = {"flops": "FLOPs", "body_params": "-body"}.get(self.metric, "")
        return f"nasbert-{human(self.limit, exact=True)}{suffix}"

    def __str__(self):
        if self.metric == "latency":
            return f"latency={self.limit:.12g}ms@{self.device}"
        return f"{self.metric}={human(self.limit, exact=True)}"


def human(number, exact=False):
    """`5000000 -> '5M'`, `1500000 -> '1.5M'`, `2.5e9 -> '2.5G'`; three significant digits, or
    every digit with `exact` (`746367 -> '746.367K'`)."""
    digits = ".12g" if exact else ".3g"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= scale:
            return f"{number / scale:{digits}}{unit}"
    return f"{number:{digits}}"


@dataclass
class CandidateTables:
    """What the search chooses from: per block, the surviving candidates (`shrinking.Candidate`:
    an architecture and its block validation loss), and the embedding candidates (empty: the
    embedding keeps the cost model's `embedding_size`, for runs of the first design)."""

    blocks: list
    embeddings: list = field(default_factory=list)

    def __post_init__(self):
        if not self.blocks or not all(self.blocks):
            raise ValueError(f"Every block needs at least one candidate, got sizes {[len(b) for b in self.blocks]}.")

    def hidden_sizes(self, block=None):
        blocks = self.blocks if block is None else [self.blocks[block]]
        return sorted({c.arch.hidden_size for candidates in blocks for c in candidates})

    def without_ops(self, excluded):
        """The tables without every candidate that uses an excluded op: an op code (`conv:3`) or a
        whole kind (`conv`), e.g. ops that a deployment target runs slowly or not at all."""
        excluded = set(excluded)

        def allowed(candidate):
            return not any(code in excluded or parse_op(code)[0] in excluded for code in candidate.arch.layers)

        blocks = [[c for c in block if allowed(c)] for block in self.blocks]
        for index, block in enumerate(blocks):
            if not block:
                raise ValueError(f"No candidate of block {index} avoids the excluded ops {sorted(excluded)}: every "
                                 f"one of its {len(self.blocks[index])} surviving candidates uses one of them.")
        return CandidateTables(blocks, self.embeddings)

    def embedding_choices(self):
        """`[(embedding_size or None, hidden_size, loss), ...]`: every way to start a model."""
        if self.embeddings:
            return [(e.embedding_size, e.hidden_size, e.loss) for e in self.embeddings]
        return [(None, hidden, 0.0) for hidden in self.hidden_sizes(0)]


def load_candidates(path):
    """The candidate tables of a supernet run (`RUN_DIR/candidates.json`)."""
    path = Path(path)
    table = read_json(path)
    try:
        blocks = pools_from_table(table)
        embeddings = [EmbeddingCandidate.from_dict(row) for row in table.get("embeddings", [])]
    except (AttributeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a candidates table: {error}") from None
    if any(c.loss is None for block in blocks for c in block):
        raise ValueError(f"{path}: some candidates have no validation loss; the supernet run did not finish.")
    try:
        return CandidateTables(blocks, embeddings)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


@dataclass(frozen=True)
class SearchResult:
    architecture: Architecture
    approx_loss: float  # the embedding's loss plus the chosen block candidates' losses
    cost: float
    choice: tuple  # index of the embedding choice, then of the chosen candidate in each block's table


def _start(tables, cost_model, room, embedding_size=None):
    """Partial models after block 0: an embedding choice and a block-0 candidate of its hidden size."""
    last = len(tables.blocks) == 1
    partials = []
    for e_index, (size, hidden, loss) in enumerate(tables.embedding_choices()):
        if embedding_size is not None and size != embedding_size:
            continue
        width = size or getattr(cost_model, "embedding_size", None) or hidden
        base = cost_model.embedding_cost(width, hidden)
        for index, candidate in enumerate(tables.blocks[0]):
            if candidate.arch.hidden_size == hidden:
                total = base + _block_cost(cost_model, candidate, last)
                if total <= room:
                    partials.append((loss + candidate.loss, total, (e_index, index)))
    return _prune(partials, room, math.inf)


def _block_cost(cost_model, candidate, last):
    hidden = candidate.arch.hidden_size
    return cost_model.layers_cost(candidate.arch.layers, hidden) + (cost_model.head_cost(hidden) if last else 0)


def _prune(items, room, k):
    """Keep only the partial models that can still be among the `k` best under some budget up to `room`."""
    items = sorted((item for item in items if item[1] <= room), key=lambda item: (item[1], item[0], item[2]))
    if k == math.inf:
        return items
    kept, kept_losses = [], []
    for item in items:
        # Every kept item so far is at most as expensive; k of them at least as good rule this one out.
        if bisect.bisect_right(kept_losses, item[0]) < k:
            kept.append(item)
            bisect.insort(kept_losses, item[0])
    return kept


def _merge(partials, block, cost_model, room, k, last):
    """Extend every partial model by every candidate of `block` (any hidden size: the link between
    blocks of different widths is free), keeping those that can still be among the `k` best."""
    costs = [_block_cost(cost_model, candidate, last) for candidate in block]
    extended = [(loss + candidate.loss, cost + extra, choice + (index,))
                for loss, cost, choice in partials
                for index, (candidate, extra) in enumerate(zip(block, costs))]
    return _prune(extended, room, k)


def assemble(tables, choice):
    """The whole architecture of a choice `(embedding index, candidate index per block)`."""
    size, _, _ = tables.embedding_choices()[choice[0]]
    parts = [block[index].arch for block, index in zip(tables.blocks, choice[1:])]
    return Architecture.join(parts, size)


def approx_loss(tables, choice):
    embedding_loss = tables.embedding_choices()[choice[0]][2]
    return embedding_loss + sum(block[index].loss for block, index in zip(tables.blocks, choice[1:]))


def minimum_cost(tables, cost_model):
    """The cheapest whole model any combination of candidates can make (blocks are independent
    once block 0 and its embedding are chosen)."""
    last = len(tables.blocks) - 1
    rest = sum(min(_block_cost(cost_model, c, b == last) for c in block)
               for b, block in enumerate(tables.blocks) if b > 0)
    starts = _start(tables, cost_model, math.inf)
    if not starts:
        return None
    return min(cost for _, cost, _ in starts) + rest


MAX_BAND_PARTIALS = 5_000_000
# The default floor of the family search, as a fraction of each budget. Block losses after a
# CPU-minutes supernet rank models of one width well but barely separate a model from a larger
# one of the same widths, so without a floor large budgets get small models (docs/search.md).
MIN_BUDGET_USE = 0.7


def search(tables, cost_model, limit, k=1, per_embedding_size=False, floor=0.0):
    """The `k` architectures of lowest approximate loss (embedding loss plus summed block losses)
    whose cost is at most `limit`, and at least `floor`, best first; with `per_embedding_size`,
    the `k` best of every embedding width (the assembled re-scoring then sees every width).

    Exact: partial models are merged block by block and dropped only when `k` others are at
    least as cheap and at least as good, which can never remove one of the `k` best models under
    any budget; hidden sizes may differ from block to block. A `floor` breaks that argument (the
    cheaper model may fall below it), so with one, partial models are dropped only when no
    completion can land in `[floor, limit]`: still exact, and bounded by `MAX_BAND_PARTIALS`.
    Raises `ValueError` naming the smallest feasible value when nothing fits under `limit`, and
    `NoModelInBand` (a `ValueError`) when models fit but none reaches `floor`.
    """
    sizes = sorted({size for size, _, _ in tables.embedding_choices()}, key=lambda s: s or 0)
    groups = sizes if per_embedding_size else [None]
    results = []
    for size in groups:
        partials = _start(tables, cost_model, limit, size)
        if floor > 0:
            partials = _band_search(partials, tables, cost_model, limit, floor, k)
        else:
            partials = _prune(partials, limit, k)
            for b, block in enumerate(tables.blocks[1:], start=1):
                partials = _merge(partials, block, cost_model, limit, k, b == len(tables.blocks) - 1)
        results.extend(_best([SearchResult(assemble(tables, choice), loss, cost, choice)
                              for loss, cost, choice in partials], k))
    if not results:
        _raise_nothing_fits(tables, cost_model, limit, floor)
    return _best(results, None if per_embedding_size else k)


def _band_search(partials, tables, cost_model, limit, floor, k):
    """The `k` best whole models of every cost in `[floor, limit]` grown from `partials` (see `search`).

    Partial models of equal cost have the same completions, so only the `k` best of each cost can
    lead to a best model: keeping just those is exact, and small where costs repeat (candidates
    built from a few op sizes, as in spaces derived from the teacher)."""
    last = len(tables.blocks) - 1
    most = [max(_block_cost(cost_model, c, b == last) for c in block) for b, block in enumerate(tables.blocks)]
    for b, block in enumerate(tables.blocks[1:], start=1):
        room_after = sum(most[b + 1:])
        costs = [_block_cost(cost_model, candidate, b == last) for candidate in block]
        partials = [(loss + candidate.loss, cost + extra, choice + (index,))
                    for loss, cost, choice in partials
                    for index, (candidate, extra) in enumerate(zip(block, costs))
                    if cost + extra <= limit and cost + extra + room_after >= floor]
        partials = _best_per_cost(partials, k)
        if len(partials) > MAX_BAND_PARTIALS:
            raise ValueError(
                f"The search with a floor of {floor:g} grew past {MAX_BAND_PARTIALS} partial models; "
                "lower or drop the floor (min_budget_use=0) for this many candidates."
            )
    return [item for item in partials if floor <= item[1] <= limit]


def _best_per_cost(partials, k):
    kept, count = [], {}
    for item in sorted(partials, key=lambda item: (item[1], item[0], item[2])):
        if count.get(item[1], 0) < k:
            kept.append(item)
            count[item[1]] = count.get(item[1], 0) + 1
    return kept


def _raise_nothing_fits(tables, cost_model, limit, floor):
    smallest = minimum_cost(tables, cost_model)
    if smallest is None:
        raise ValueError(
            "No architecture fits: no embedding choice matches a hidden size of block 0 "
            f"(block 0 hidden sizes {tables.hidden_sizes(0)})."
        )
    if smallest > limit:
        raise ValueError(
            f"No architecture fits {cost_model.metric} <= {limit:g}: the smallest feasible value is {smallest:g}."
        )
    raise NoModelInBand(
        f"No architecture has {floor:g} <= {cost_model.metric} <= {limit:g}: the candidates cannot fill the budget "
        "that far."
    )


class NoModelInBand(ValueError):
    """Raised by `search` when models fit under the limit but none reaches the floor."""


def _best(results, k):
    return sorted(results, key=lambda result: (result.approx_loss, result.cost, str(result.architecture)))[:k]


def brute_force_search(tables, cost_model, limit, k=1, floor=0.0):
    """Reference for tests: enumerate every combination (exponential; tiny tables only)."""
    results = []
    for e_index, (_, hidden, _) in enumerate(tables.embedding_choices()):
        first = [i for i, c in enumerate(tables.blocks[0]) if c.arch.hidden_size == hidden]
        rest = [range(len(block)) for block in tables.blocks[1:]]
        for combination in itertools.product(first, *rest):
            choice = (e_index, *combination)
            architecture = assemble(tables, choice)
            cost = cost_model.cost(architecture)
            if floor <= cost <= limit:
                results.append(SearchResult(architecture, approx_loss(tables, choice), cost, choice))
    return _best(results, k)


def cost_model_for(budget, seq_len=128, embedding_size=None, latency_tables=None, vocab_size=30522,
                   max_position_embeddings=512, type_vocab_size=2, embedding_factorization="all"):
    """The cost model a budget is measured with; latency needs a table for its device.

    `embedding_size` is the width of models that name none (the teacher's, in runs of the first
    design); the vocabulary and position sizes are the teacher's (exported models keep them);
    `embedding_factorization` is the exported models' (`Supernet.embedding_factorization`)."""
    if budget.metric == "params":
        return ParamsCost(vocab_size, max_position_embeddings, type_vocab_size, embedding_size,
                          embedding_factorization)
    if budget.metric == "body_params":
        return BodyParamsCost()
    if budget.metric == "flops":
        return FlopsCost(seq_len=seq_len, embedding_size=embedding_size, embedding_factorization=embedding_factorization)
    tables = latency_tables or {}
    if budget.device not in tables:
        known = ", ".join(sorted(tables)) or "none"
        raise ValueError(
            f"Budget {budget} needs a latency table for device {budget.device!r} (have: {known}); "
            f"measure one with `nasbert latency-table --device {budget.device}`."
        )
    return tables[budget.device]
