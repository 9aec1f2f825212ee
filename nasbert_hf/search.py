"""Model-wise search: for each budget, the architecture minimising the summed block losses.

NAS-BERT approximates a whole model's quality by the sum of its blocks' validation losses, so a
model is one surviving candidate per block (all with the same hidden size) and the search is a
small knapsack. It is solved *exactly*, with no discretisation of the budget: blocks are merged
one at a time, and a partial model is dropped only when `k` others are at least as cheap and at
least as good, which can never remove one of the `k` best models under any budget. The top `k`
are then re-scored on the assembled models by the caller (see `nasbert_hf.pipeline`).
"""

import bisect
import itertools
import json
import re
from dataclasses import dataclass

from .architecture import Architecture
from .cost import FlopsCost, ParamsCost

UNITS = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}


@dataclass(frozen=True)
class Budget:
    """A budget such as `params=5M`, `flops=1.5G` or `latency=8ms@cpu` (device of a latency table)."""

    metric: str
    limit: float
    device: str = None

    @classmethod
    def parse(cls, text):
        match = re.fullmatch(r"\s*(params|flops|latency)\s*=\s*([0-9.]+)\s*([kKMGBT]?)(ms)?(?:@(\S+))?\s*", text)
        if not match or (match.group(1) == "latency") != bool(match.group(4)):
            raise ValueError(
                f"Cannot parse budget {text!r}: expected 'params=5M', 'flops=2G' or 'latency=10ms@DEVICE' "
                "(DEVICE names a latency table, e.g. cpu, cuda, ort-cpu)."
            )
        metric, number, unit, _, device = match.groups()
        if metric == "latency" and not device:
            device = "cpu"
        return cls(metric, float(number) * UNITS[unit], device if metric == "latency" else None)

    @property
    def name(self):
        """The exported model's name: `nasbert-5M`, `nasbert-2GFLOPs`, `nasbert-8ms-cpu`."""
        if self.metric == "latency":
            return f"nasbert-{self.limit:g}ms-{self.device}"
        suffix = "FLOPs" if self.metric == "flops" else ""
        return f"nasbert-{human(self.limit)}{suffix}"

    def __str__(self):
        if self.metric == "latency":
            return f"latency={self.limit:g}ms@{self.device}"
        return f"{self.metric}={human(self.limit)}"


def human(number):
    """`5000000 -> '5M'`, `1500000 -> '1.5M'`, `2.5e9 -> '2.5G'`."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= scale:
            return f"{number / scale:.3g}{unit}"
    return f"{number:.3g}"


@dataclass(frozen=True)
class Candidate:
    """One surviving sub-architecture of one block, with its block validation loss."""

    hidden_size: int
    layers: tuple
    loss: float

    @classmethod
    def from_dict(cls, row):
        return cls(int(row["hidden_size"]), tuple(row["layers"]), float(row["loss"]))


def load_candidates(path):
    """The per-block candidate tables of a supernet run (`RUN_DIR/candidates.json`)."""
    with open(path) as handle:
        blocks = json.load(handle)["blocks"]
    if not blocks or not all(blocks):
        raise ValueError(f"{path}: every block needs at least one candidate, got sizes {[len(b) for b in blocks]}.")
    return [[Candidate.from_dict(row) for row in block] for block in blocks]


@dataclass(frozen=True)
class SearchResult:
    architecture: Architecture
    approx_loss: float  # sum of the chosen candidates' block losses
    cost: float
    choice: tuple  # index of the chosen candidate in each block's table


def _merge(partials, block, cost_model, hidden_size, room, k):
    """Extend every partial model by every candidate of `block`; keep only those that can still be
    among the `k` best under some budget up to `room`."""
    extended = []
    for loss, cost, choice in partials:
        for index, candidate in block:
            total = cost + cost_model.layers_cost(candidate.layers, hidden_size)
            if total <= room:
                extended.append((loss + candidate.loss, total, choice + (index,)))
    extended.sort(key=lambda item: (item[1], item[0], item[2]))
    kept, kept_losses = [], []
    for item in extended:
        # Every kept item so far is at most as expensive; k of them at least as good rule this one out.
        if bisect.bisect_right(kept_losses, item[0]) < k:
            kept.append(item)
            bisect.insort(kept_losses, item[0])
    return kept


def assemble(tables, choice, hidden_size):
    layers = tuple(code for block, index in zip(tables, choice) for code in block[index].layers)
    return Architecture(hidden_size, layers)


def hidden_sizes(tables):
    return sorted({c.hidden_size for block in tables for c in block})


def minimum_cost(tables, cost_model):
    """The cheapest whole model any combination of candidates can make (None if none can be made)."""
    best = None
    for hidden in hidden_sizes(tables):
        per_block = [[cost_model.layers_cost(c.layers, hidden) for c in block if c.hidden_size == hidden] for block in tables]
        if all(per_block):
            cost = cost_model.base_cost(hidden) + sum(min(costs) for costs in per_block)
            best = cost if best is None else min(best, cost)
    return best


def search(tables, cost_model, limit, k=1, per_hidden_size=False):
    """The `k` architectures of lowest summed block loss whose cost is at most `limit`, best first;
    with `per_hidden_size`, the `k` best of every hidden size.

    Raises `ValueError` naming the smallest feasible value when nothing fits.
    """
    results = []
    for hidden in hidden_sizes(tables):
        room = limit - cost_model.base_cost(hidden)
        blocks = [[(i, c) for i, c in enumerate(block) if c.hidden_size == hidden] for block in tables]
        partials = [(0.0, 0.0, ())]
        for block in blocks:
            partials = _merge(partials, block, cost_model, hidden, room, k)
        found = [SearchResult(assemble(tables, choice, hidden), loss, cost + cost_model.base_cost(hidden), choice)
                 for loss, cost, choice in partials]
        results.extend(_best(found, k) if per_hidden_size else found)
    if not results:
        smallest = minimum_cost(tables, cost_model)
        if smallest is None:
            raise ValueError(
                f"No architecture fits: no hidden size has candidates in every block "
                f"(hidden sizes per block: {[sorted({c.hidden_size for c in block}) for block in tables]})."
            )
        raise ValueError(
            f"No architecture fits {cost_model.metric} <= {limit:g}: the smallest feasible value is {smallest:g}."
        )
    return _best(results, None if per_hidden_size else k)


def _best(results, k):
    return sorted(results, key=lambda result: (result.approx_loss, result.cost, str(result.architecture)))[:k]


def brute_force_search(tables, cost_model, limit, k=1):
    """Reference for tests: enumerate every combination (exponential; tiny tables only)."""
    results = []
    for hidden in hidden_sizes(tables):
        blocks = [[(i, c) for i, c in enumerate(block) if c.hidden_size == hidden] for block in tables]
        for combination in itertools.product(*blocks):
            choice = tuple(i for i, _ in combination)
            architecture = assemble(tables, choice, hidden)
            cost = cost_model.cost(architecture)
            if cost <= limit:
                loss = sum(c.loss for _, c in combination)
                results.append(SearchResult(architecture, loss, cost, choice))
    return _best(results, k)


def cost_model_for(budget, seq_len=128, embedding_size=None, latency_tables=None):
    """The cost model a budget is measured with; latency needs a table for its device."""
    if budget.metric == "params":
        return ParamsCost()
    if budget.metric == "flops":
        return FlopsCost(seq_len=seq_len, embedding_size=embedding_size)
    tables = latency_tables or {}
    if budget.device not in tables:
        known = ", ".join(sorted(tables)) or "none"
        raise ValueError(
            f"Budget {budget} needs a latency table for device {budget.device!r} (have: {known}); "
            "measure one with `nasbert latency-table`."
        )
    return tables[budget.device]
