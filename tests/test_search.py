import json
import random

import pytest

from nasbert_hf import Architecture
from nasbert_hf.cost import BodyParamsCost, FlopsCost, ParamsCost, count_flops, count_params
from nasbert_hf.search import (
    Budget,
    CandidateTables,
    EmbeddingCandidate,
    NoModelInBand,
    brute_force_search,
    load_candidates,
    minimum_cost,
    search,
)
from nasbert_hf.modeling import NasBertModel
from nasbert_hf.shrinking import Candidate

OPS = ["mha:2", "mha:4", "ffn:64", "ffn:128", "ffn:256", "conv:3", "conv:5", "id"]
DIMENSIONS = {"vocab_size": 500, "max_position_embeddings": 64, "type_vocab_size": 2}


def candidate(hidden, layers, loss):
    return Candidate(Architecture(hidden, tuple(layers)), 0, 0, loss=loss)


def random_tables(seed, blocks=3, slots=2, per_block=12, hidden_sizes=(32, 64), embedding_sizes=(16, 48)):
    """Tables with per-block hidden sizes and searched embeddings (none when `embedding_sizes` is empty)."""
    rng = random.Random(seed)
    tables = []
    for _ in range(blocks):
        block = []
        for _ in range(per_block):
            layers = tuple(rng.choice(OPS) for _ in range(slots))
            block.append(candidate(rng.choice(hidden_sizes), layers, rng.uniform(0.1, 2.0)))
        tables.append(block)
    embeddings = [EmbeddingCandidate(size, hidden, rng.uniform(0.0, 0.5))
                  for size in embedding_sizes for hidden in hidden_sizes]
    return CandidateTables(tables, embeddings)


def cost_models():
    return [ParamsCost(**DIMENSIONS, embedding_size=40), FlopsCost(seq_len=16, embedding_size=40), BodyParamsCost()]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("metric", [0, 1, 2])
@pytest.mark.parametrize("embeddings", [(16, 48), ()])
def test_exact_search_equals_brute_force(seed, k, metric, embeddings):
    tables = random_tables(seed, embedding_sizes=embeddings)
    cost_model = cost_models()[metric]
    everything = brute_force_search(tables, cost_model, float("inf"), k=10_000)
    costs = sorted(result.cost for result in everything)
    for limit in (costs[len(costs) // 10], costs[len(costs) // 2], costs[-1]):
        expected = brute_force_search(tables, cost_model, limit, k=k)
        actual = search(tables, cost_model, limit, k=k)
        assert [r.approx_loss for r in actual] == pytest.approx([r.approx_loss for r in expected])
        assert [r.architecture for r in actual] == [r.architecture for r in expected]
        assert all(r.cost <= limit for r in actual)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("metric", [0, 1])
@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_search_with_a_floor_equals_brute_force(seed, k, metric, fraction):
    tables = random_tables(seed)
    cost_model = cost_models()[metric]
    costs = sorted(result.cost for result in brute_force_search(tables, cost_model, float("inf"), k=10_000))
    for limit in (costs[len(costs) // 10], costs[len(costs) // 2], costs[-1]):
        floor = fraction * limit
        expected = brute_force_search(tables, cost_model, limit, k=k, floor=floor)
        actual = search(tables, cost_model, limit, k=k, floor=floor)
        assert [r.architecture for r in actual] == [r.architecture for r in expected]
        assert all(floor <= r.cost <= limit for r in actual)
        # Without the floor the best model is cheaper or better, never both worse.
        free = search(tables, cost_model, limit, k=1)[0]
        assert free.approx_loss <= actual[0].approx_loss


def test_a_floor_nothing_reaches_is_its_own_error():
    tables = random_tables(0)
    cost_model = cost_models()[0]
    largest = max(r.cost for r in brute_force_search(tables, cost_model, float("inf"), k=10_000))
    with pytest.raises(NoModelInBand, match="cannot fill the budget"):
        search(tables, cost_model, 2 * largest, floor=1.5 * largest)


def test_searched_models_mix_hidden_sizes_and_embedding_widths():
    results = search(random_tables(1), ParamsCost(**DIMENSIONS), float("inf"), k=50)
    assert any(not r.architecture.is_uniform for r in results)
    assert {r.architecture.embedding_size for r in results} == {16, 48}


def test_costs_are_the_real_model_costs():
    """A params budget counts every parameter of the model AutoModel loads, embeddings and pooler included."""
    tables = random_tables(3)
    params = ParamsCost(**DIMENSIONS)
    for result in search(tables, params, float("inf"), k=5, per_embedding_size=True):
        config = result.architecture.to_config(**DIMENSIONS, embedding_projection=True)
        assert result.cost == count_params(config) == sum(p.numel() for p in NasBertModel(config).parameters())
    for result in search(tables, BodyParamsCost(), float("inf"), k=5):
        assert result.cost == count_params(result.architecture.to_config(), embeddings=False, pooler=False)
    flops = FlopsCost(seq_len=32)
    for result in search(tables, flops, float("inf"), k=5):
        config = result.architecture.to_config(embedding_projection=True)
        assert result.cost == count_flops(config, seq_len=32)


def test_impossible_budget_names_smallest_feasible_value():
    tables = random_tables(5)
    params = ParamsCost(**DIMENSIONS)
    smallest = minimum_cost(tables, params)
    assert search(tables, params, smallest, k=1)[0].cost == smallest
    with pytest.raises(ValueError, match=f"smallest feasible value is {smallest:g}"):
        search(tables, params, smallest - 1)


def test_embedding_choices_must_meet_block_0():
    tables = CandidateTables([[candidate(32, ("mha:2",), 0.5)], [candidate(64, ("ffn:64",), 0.5)]],
                             [EmbeddingCandidate(16, 64, 0.1)])
    with pytest.raises(ValueError, match="no embedding choice matches a hidden size of block 0"):
        search(tables, ParamsCost(**DIMENSIONS), float("inf"))
    tables.embeddings.append(EmbeddingCandidate(16, 32, 0.1))
    result = search(tables, ParamsCost(**DIMENSIONS), float("inf"))[0]
    assert result.architecture == Architecture.from_widths((32, 64), ("mha:2", "ffn:64"), embedding_size=16)
    assert result.approx_loss == pytest.approx(1.1)


@pytest.mark.parametrize(
    "text, metric, limit, device, name",
    [
        ("params=5M", "params", 5e6, None, "nasbert-5M"),
        ("params=1.5M", "params", 1.5e6, None, "nasbert-1.5M"),
        ("params=746367", "params", 746367, None, "nasbert-746.367K"),
        ("body_params=3M", "body_params", 3e6, None, "nasbert-3M-body"),
        ("flops=2G", "flops", 2e9, None, "nasbert-2GFLOPs"),
        ("latency=8ms@cpu", "latency", 8, "cpu", "nasbert-8ms-cpu"),
        ("latency=2.5ms@cuda", "latency", 2.5, "cuda", "nasbert-2.5ms-cuda"),
    ],
)
def test_budget_parsing_and_names(text, metric, limit, device, name):
    budget = Budget.parse(text)
    assert (budget.metric, budget.limit, budget.device, budget.name) == (metric, limit, device, name)
    assert Budget.parse(str(budget)) == budget


@pytest.mark.parametrize("text", ["params5M", "size=5M", "latency=8", "params=5ms", "params=M", "params=0"])
def test_bad_budget_is_named(text):
    with pytest.raises(ValueError, match="Cannot parse budget|must be positive"):
        Budget.parse(text)


def test_different_budgets_never_share_a_name():
    assert Budget.parse("params=746367").name != Budget.parse("params=746368").name


def test_load_candidates(tmp_path):
    path = tmp_path / "candidates.json"
    row = {"hidden_size": 64, "layers": ["mha:4", "id"], "loss": 0.25, "params": 1, "flops": 2}
    embedding = {"embedding_size": 16, "hidden_size": 64, "loss": 0.5}
    path.write_text(json.dumps({"blocks": [[row], [row]], "embeddings": [embedding]}))
    tables = load_candidates(path)
    assert tables.blocks[1][0].arch == Architecture(64, ("mha:4", "id")) and tables.blocks[1][0].loss == 0.25
    result = search(tables, ParamsCost(), float("inf"))[0]
    assert result.architecture == Architecture(64, ("mha:4", "id", "mha:4", "id"), embedding_size=16)
    assert result.approx_loss == pytest.approx(1.0)
    path.write_text(json.dumps({"blocks": [[row], []]}))
    with pytest.raises(ValueError, match="Every block needs at least one candidate"):
        load_candidates(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"candidates.json: invalid JSON at line 1, column 2"):
        load_candidates(path)
    path.write_text(json.dumps(["a list"]))
    with pytest.raises(ValueError, match="is not a candidates table"):
        load_candidates(path)


@pytest.mark.parametrize("seed", range(4))
def test_excluding_ops_searches_only_the_models_without_them(seed):
    tables = random_tables(seed, per_block=30)
    cost_model = ParamsCost(**DIMENSIONS)
    no_conv = tables.without_ops(["conv"])
    results = brute_force_search(no_conv, cost_model, float("inf"), k=100_000)
    # Exactly the full space's models that use no conv of any width, in the same order.
    expected = [r.architecture for r in brute_force_search(tables, cost_model, float("inf"), k=100_000)
                if not any(code.startswith("conv") for code in r.architecture.layers)]
    assert [r.architecture for r in results] == expected and expected
    # A code excludes that width only.
    layers = {code for block in tables.without_ops(["conv:3"]).blocks for c in block for code in c.arch.layers}
    assert "conv:3" not in layers and "conv:5" in layers
    assert tables.without_ops([]).blocks == tables.blocks


def test_excluding_every_candidate_of_a_block_names_the_block():
    tables = CandidateTables([[candidate(32, ["mha:2", "id"], 0.1)], [candidate(32, ["conv:3", "id"], 0.1)]])
    with pytest.raises(ValueError, match=r"No candidate of block 1 avoids the excluded ops \['conv'\]"):
        tables.without_ops(["conv"])


@pytest.mark.parametrize("seed", range(6))
def test_per_embedding_size_search_keeps_the_k_best_of_every_width(seed):
    tables = random_tables(seed)
    cost_model = ParamsCost(**DIMENSIONS)
    everything = brute_force_search(tables, cost_model, float("inf"), k=100_000)
    limit = sorted(r.cost for r in everything)[-1] * 0.7
    results = search(tables, cost_model, limit, k=3, per_embedding_size=True)
    for size in (16, 48):
        expected = [r for r in brute_force_search(tables, cost_model, limit, k=100_000)
                    if r.architecture.embedding_size == size][:3]
        assert [r.architecture for r in results if r.architecture.embedding_size == size] == [r.architecture for r in expected]
    assert [r.approx_loss for r in results] == sorted(r.approx_loss for r in results)
