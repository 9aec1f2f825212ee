import json
import random

import pytest

from nasbert_hf import Architecture
from nasbert_hf.cost import FlopsCost, ParamsCost, count_flops, count_params
from nasbert_hf.search import (
    Budget,
    Candidate,
    brute_force_search,
    load_candidates,
    minimum_cost,
    search,
)

OPS = ["mha:2", "mha:4", "ffn:64", "ffn:128", "ffn:256", "conv:3", "conv:5", "id"]


def random_tables(seed, blocks=3, slots=2, per_block=12, hidden_sizes=(32, 64)):
    rng = random.Random(seed)
    tables = []
    for _ in range(blocks):
        block = []
        for _ in range(per_block):
            layers = tuple(rng.choice(OPS) for _ in range(slots))
            block.append(Candidate(rng.choice(hidden_sizes), layers, rng.uniform(0.1, 2.0)))
        tables.append(block)
    return tables


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("k", [1, 5])
def test_exact_search_equals_brute_force(seed, k):
    tables = random_tables(seed)
    cost_model = ParamsCost() if seed % 2 else FlopsCost(seq_len=16, embedding_size=48)
    everything = brute_force_search(tables, cost_model, float("inf"), k=10_000)
    costs = sorted(result.cost for result in everything)
    for limit in (costs[len(costs) // 10], costs[len(costs) // 2], costs[-1]):
        expected = brute_force_search(tables, cost_model, limit, k=k)
        actual = search(tables, cost_model, limit, k=k)
        assert [r.approx_loss for r in actual] == pytest.approx([r.approx_loss for r in expected])
        assert [r.architecture for r in actual] == [r.architecture for r in expected]
        assert all(r.cost <= limit for r in actual)


def test_costs_are_the_real_model_costs():
    tables = random_tables(3)
    for result in search(tables, ParamsCost(), float("inf"), k=5):
        assert result.cost == count_params(result.architecture, embeddings=False, pooler=False)
    flops = FlopsCost(seq_len=32, embedding_size=48)
    for result in search(tables, flops, float("inf"), k=5):
        config = result.architecture.to_config(embedding_size=48)
        assert result.cost == count_flops(config, seq_len=32)


def test_impossible_budget_names_smallest_feasible_value():
    tables = random_tables(5)
    smallest = minimum_cost(tables, ParamsCost())
    assert search(tables, ParamsCost(), smallest, k=1)[0].cost == smallest
    with pytest.raises(ValueError, match=f"smallest feasible value is {smallest:g}"):
        search(tables, ParamsCost(), smallest - 1)


def test_blocks_must_share_a_hidden_size():
    tables = [[Candidate(32, ("mha:2",), 0.5)], [Candidate(64, ("ffn:64",), 0.5)]]
    with pytest.raises(ValueError, match="No architecture fits"):
        search(tables, ParamsCost(), float("inf"))


@pytest.mark.parametrize(
    "text, metric, limit, device, name",
    [
        ("params=5M", "params", 5e6, None, "nasbert-5M"),
        ("params=1.5M", "params", 1.5e6, None, "nasbert-1.5M"),
        ("flops=2G", "flops", 2e9, None, "nasbert-2GFLOPs"),
        ("latency=8ms@cpu", "latency", 8, "cpu", "nasbert-8ms-cpu"),
        ("latency=2.5ms@cuda", "latency", 2.5, "cuda", "nasbert-2.5ms-cuda"),
    ],
)
def test_budget_parsing_and_names(text, metric, limit, device, name):
    budget = Budget.parse(text)
    assert (budget.metric, budget.limit, budget.device, budget.name) == (metric, limit, device, name)
    assert Budget.parse(str(budget)) == budget


@pytest.mark.parametrize("text", ["params5M", "size=5M", "latency=8", "params=5ms", "params=M"])
def test_bad_budget_is_named(text):
    with pytest.raises(ValueError, match="Cannot parse budget"):
        Budget.parse(text)


def test_load_candidates(tmp_path):
    path = tmp_path / "candidates.json"
    row = {"hidden_size": 64, "layers": ["mha:4", "id"], "loss": 0.25, "params": 1, "flops": 2}
    path.write_text(json.dumps({"blocks": [[row], [row]]}))
    tables = load_candidates(path)
    assert tables[1][0] == Candidate(64, ("mha:4", "id"), 0.25)
    result = search(tables, ParamsCost(), float("inf"))[0]
    assert result.architecture == Architecture(64, ("mha:4", "id", "mha:4", "id"))
    path.write_text(json.dumps({"blocks": [[row], []]}))
    with pytest.raises(ValueError, match="every block needs at least one candidate"):
        load_candidates(path)


@pytest.mark.parametrize("seed", range(6))
def test_per_hidden_size_search_keeps_the_k_best_of_every_width(seed):
    tables = random_tables(seed)
    cost_model = ParamsCost()
    limit = sorted(r.cost for r in brute_force_search(tables, cost_model, float("inf"), k=10_000))[-1] * 0.7
    results = search(tables, cost_model, limit, k=3, per_hidden_size=True)
    for hidden in (32, 64):
        expected = [r for r in brute_force_search(tables, cost_model, limit, k=10_000) if r.architecture.hidden_size == hidden][:3]
        assert [r.architecture for r in results if r.architecture.hidden_size == hidden] == [r.architecture for r in expected]
    assert [r.approx_loss for r in results] == sorted(r.approx_loss for r in results)
