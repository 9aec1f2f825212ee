import random

import pytest
import torch
from conftest import random_inputs

from nasbert_hf.architecture import Architecture
from nasbert_hf.blockwise import masked_mse
from nasbert_hf.cost import count_flops, count_params
from nasbert_hf.folders import write_json
from nasbert_hf.search_space import SearchSpace
from nasbert_hf.shrinking import (
    Candidate,
    ShrinkingConfig,
    assign_bins,
    bins_of,
    candidates_table,
    initial_pool,
    initial_pools,
    read_candidates,
    sample_block_archs,
    score_pool,
    shrink_pool,
)
from nasbert_hf.supernet import Supernet

SMALL = SearchSpace([16, 24], ["mha:2", "mha:4", "ffn:32", "ffn:64", "conv:3", "id"], 4, 2)  # 72 per block
LARGE = SearchSpace([16, 32], ["mha:2", "mha:4", "ffn:32", "ffn:64", "conv:3", "conv:5", "id"], 12, 2)


def test_candidate_costs_match_the_cost_model():
    arch = Architecture(24, ("mha:4", "ffn:64", "conv:3"))
    candidate = Candidate.of(arch, seq_len=128)
    assert candidate.params == count_params(arch, embeddings=False, pooler=False)
    assert candidate.flops == count_flops(arch, seq_len=128, pooler=False)


def test_small_pools_are_enumerated_and_large_ones_sampled():
    config = ShrinkingConfig(pool_size=200, num_bins=3)
    pool = initial_pool(SMALL, 0, config, seq_len=16, seed=0)
    assert sorted(map(str, (c.arch for c in pool))) == sorted(map(str, SMALL.enumerate_block()))
    config = ShrinkingConfig(pool_size=40, num_bins=4)
    pool = initial_pool(LARGE, 1, config, seq_len=16, seed=0)
    archs = [c.arch for c in pool]
    assert len(archs) == len(set(archs)) == 40
    assert sum(a.hidden_size == 16 for a in archs) == 20  # an equal share per hidden size
    for arch in archs:
        LARGE.validate(arch, block=1)
    assert archs == [c.arch for c in initial_pool(LARGE, 1, config, seq_len=16, seed=0)]
    assert archs != [c.arch for c in initial_pool(LARGE, 1, config, seq_len=16, seed=1)]


def test_bins_are_parameter_quantiles_per_hidden_size():
    pool = initial_pool(SMALL, 0, ShrinkingConfig(pool_size=200, num_bins=3), seq_len=16, seed=0)
    for hidden in SMALL.hidden_sizes:
        members = [c for c in pool if c.arch.hidden_size == hidden]
        assert {c.bin for c in members} == {0, 1, 2}
        for low in members:
            for high in members:
                if low.params < high.params:
                    assert low.bin <= high.bin
                if low.params == high.params:
                    assert low.bin == high.bin
        # Roughly equal sizes (equal parameter counts are kept together).
        sizes = [sum(c.bin == b for c in members) for b in range(3)]
        assert min(sizes) >= len(members) // 6


def test_shrinking_keeps_every_bin_non_empty_and_drops_the_worst():
    config = ShrinkingConfig(pool_size=40, num_bins=4, drop_fraction=0.5, min_per_bin=2)
    pool = initial_pool(LARGE, 0, config, seq_len=16, seed=0)
    bins = set(bins_of(pool))
    rng = random.Random(0)
    for round_ in range(6):
        for candidate in pool:
            # Bigger candidates tend to distil better: the naive "drop the worst" would empty the small bins.
            candidate.loss = 1.0 / candidate.params + 0.001 * rng.random()
        shrunk = shrink_pool(pool, config.drop_fraction, config.min_per_bin)
        assert set(bins_of(shrunk)) == bins
        for key, group in bins_of(pool).items():
            kept = bins_of(shrunk)[key]
            assert len(kept) == max(min(2, len(group)), len(group) - len(group) // 2)
            dropped = [c for c in group if c not in kept]
            if dropped:
                assert max(c.loss for c in kept) <= min(c.loss for c in dropped)
        assert [c for c in pool if c in shrunk] == shrunk  # pool order is kept
        pool = shrunk
    assert all(len(group) == 2 for group in bins_of(pool).values() if len(group) > 1)


def test_shrinking_needs_scores():
    pool = initial_pool(SMALL, 0, ShrinkingConfig(pool_size=10), seq_len=16, seed=0)
    with pytest.raises(ValueError, match="without a finite validation loss"):
        shrink_pool(pool, 0.5, 1)


def test_assign_bins_with_equal_counts():
    candidates = [Candidate(Architecture(8, ("id",)), params, 0) for params in (5, 5, 5, 5, 9, 9)]
    assign_bins(candidates, 2)
    assert [c.bin for c in candidates] == [0, 0, 0, 0, 1, 1]


def test_training_samples_reproducibly_from_the_pools():
    pools = initial_pools(SMALL, ShrinkingConfig(pool_size=20), seq_len=16, seed=0)
    first = [sample_block_archs(pools, seed=1, step=step) for step in range(30)]
    assert first == [sample_block_archs(pools, seed=1, step=step) for step in range(30)]
    for archs in first:
        assert all(arch in {c.arch for c in pool} for arch, pool in zip(archs, pools))
    assert len({tuple(archs) for archs in first}) > 20


def test_score_pool_is_the_block_validation_loss():
    torch.manual_seed(0)
    supernet = Supernet(SMALL, 20).eval()
    pool = initial_pool(SMALL, 1, ShrinkingConfig(pool_size=12), seq_len=8, seed=0)
    eval_states = []
    for seed in range(2):
        _, mask = random_inputs(50, batch=3, length=8, seed=seed)
        eval_states.append(([torch.randn(3, 8, 20) for _ in range(3)], mask))
    score_pool(supernet, 1, pool, eval_states)
    for candidate in pool:
        with torch.no_grad():
            sse = count = 0.0
            for states, mask in eval_states:
                prediction = supernet.blocks[1](states[1], mask.bool(), candidate.arch)
                weight = mask.sum().item() * 20
                sse += masked_mse(prediction, states[2], mask).item() * weight
                count += weight
        assert candidate.loss == pytest.approx(sse / count, rel=1e-5)
    # A reduce over processes receives the (sse, count) sums.
    seen = []
    score_pool(supernet, 1, pool, eval_states, reduce=lambda sums: seen.append(sums.shape) or sums * 2)
    assert seen == [(len(pool), 2)]


def test_candidates_table_round_trips(tmp_path):
    pools = initial_pools(SMALL, ShrinkingConfig(pool_size=8), seq_len=16, seed=0)
    for pool in pools:
        for index, candidate in enumerate(pool):
            candidate.loss = 0.1 * index
    table = candidates_table(pools)
    entry = table["blocks"][0][0]
    assert {"hidden_size", "layers", "loss", "params", "flops"} <= set(entry)
    assert isinstance(entry["layers"], list)
    write_json(tmp_path / "candidates.json", table)
    assert read_candidates(tmp_path / "candidates.json") == pools
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(pool_size=0), "pool_size=0"), (dict(drop_fraction=1.0), r"drop_fraction=1.0 must be in \[0, 1\)")],
)
def test_shrinking_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShrinkingConfig(**kwargs)


def test_shrink_schedule_leaves_the_last_step_to_the_final_scoring():
    assert ShrinkingConfig(shrink_every=50).shrink_steps(200) == [50, 100, 150]
    assert ShrinkingConfig(shrink_every=50).shrink_steps(30) == []
