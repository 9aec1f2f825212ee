import random

import pytest
import torch
from conftest import SPACE, teacher_like_states

from nasbert_hf.modeling.modeling_nasbert import sliced_linear
from nasbert_hf.projections import BoundaryStatistics, principal_basis
from nasbert_hf.supernet import Supernet


def correlated_states(tokens, width, count, seed=0):
    """`count` boundary tensors `(1, tokens, width)` with very unequal variances along random directions."""
    generator = torch.Generator().manual_seed(seed)
    states = []
    for _ in range(count):
        mixing = torch.randn(width, width, generator=generator) * torch.logspace(1, -2, width)[:, None]
        offset = torch.randn(width, generator=generator)
        states.append((torch.randn(1, tokens, width, generator=generator) @ mixing + offset))
    return states


def fitted_bases(states, rows, attention_mask=None):
    statistics = BoundaryStatistics(len(states), states[0].shape[-1])
    statistics.update(states, attention_mask)
    return statistics.bases(rows)


def test_principal_basis_matches_an_svd_of_the_centred_data():
    (states,) = correlated_states(500, 12, 1)
    rows = states[0].double()
    components, scales, mean = fitted_bases([states], 5)[0]
    torch.testing.assert_close(mean, rows.mean(0).float())
    centred = rows - rows.mean(0)
    _, singular_values, right = torch.linalg.svd(centred, full_matrices=False)
    torch.testing.assert_close(scales, (singular_values[:5] / len(rows) ** 0.5).float(), rtol=1e-4, atol=1e-6)
    # The same directions up to sign; ours have their largest entry positive.
    overlap = (components.double() @ right[:5].T).abs()
    torch.testing.assert_close(overlap, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-4)
    assert (components.gather(1, components.abs().argmax(1, keepdim=True)) > 0).all()
    torch.testing.assert_close(components @ components.T, torch.eye(5), rtol=0, atol=1e-5)


def test_moments_skip_padding_and_add_up_over_batches():
    states = correlated_states(40, 8, 2)
    mask = torch.ones(1, 40, dtype=torch.long)
    mask[0, 30:] = 0
    padded = [s.clone() for s in states]
    for s in padded:
        s[0, 30:] = 1e6  # padding must not count
    real = [s[:, :30] for s in states]
    whole = fitted_bases(real, 4)
    # Two batches (as two processes or two steps would see them) give the same bases as one.
    statistics = BoundaryStatistics(2, 8)
    statistics.update([s[:, :10] for s in real])
    statistics.update([s[:, 10:] for s in padded], mask[:, 10:])
    for (c1, s1, m1), (c2, s2, m2) in zip(whole, statistics.bases(4)):
        torch.testing.assert_close(c1, c2, rtol=0, atol=1e-5)
        torch.testing.assert_close(s1, s2)
        torch.testing.assert_close(m1, m2)


def test_rows_beyond_the_width_are_zero():
    components, scales, _ = fitted_bases(correlated_states(50, 6, 1), 9)[0]
    assert components.shape == (9, 6) and (components[6:] == 0).all() and (scales[6:] == 1).all()


def test_shared_bases_give_every_boundary_one_rotation_and_its_own_mean_and_scales():
    states = correlated_states(400, 8, 3)
    statistics = BoundaryStatistics(3, 8)
    statistics.update(states)
    whitened, isotropic = statistics.bases(5, shared=True), statistics.bases(5, shared=True, whiten=False)
    for (components, scales, mean), (same, scale, same_mean), hidden in zip(whitened, isotropic, states):
        rows = hidden[0].double()
        torch.testing.assert_close(components, whitened[0][0])  # one rotation for all boundaries
        torch.testing.assert_close(same, components)
        torch.testing.assert_close(components @ components.T, torch.eye(5), rtol=0, atol=1e-5)
        torch.testing.assert_close(mean, rows.mean(0).float())
        torch.testing.assert_close(same_mean, mean)
        # Whitened: the standard deviation along each shared direction; isotropic: their RMS, once.
        along = ((rows - rows.mean(0)) @ components.double().T).pow(2).mean(0).sqrt()
        torch.testing.assert_close(scales, along.float(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(scale, along.pow(2).mean().sqrt().float().expand(5), rtol=1e-4, atol=1e-6)


def test_shared_bases_carry_a_slowly_changing_state_to_itself():
    """Two boundaries whose states differ by a little noise, with nearly equal variances: each
    boundary's own principal directions are arbitrary rotations of each other, so reading
    coordinates at one boundary as coordinates of the next (what an identity op does) is wrong;
    with shared directions it is nearly exact."""
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(1, 2000, 8, generator=generator) * torch.linspace(1.0, 0.9, 8)
    second = first + 0.05 * torch.randn(1, 2000, 8, generator=generator)
    statistics = BoundaryStatistics(2, 8)
    statistics.update([first, second])

    def identity_error(bases):
        (p0, s0, m0), (p1, s1, m1) = bases
        coordinates = (first[0] - m0) @ p0.T / s0
        return ((coordinates * s1) @ p1 + m1 - second[0]).pow(2).mean().item()

    shared, own = identity_error(statistics.bases(8, shared=True, whiten=False)), identity_error(statistics.bases(8))
    assert shared < 0.01 < 0.1 < own


def test_no_tokens_is_a_clear_error():
    statistics = BoundaryStatistics(2, 4)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        statistics.bases(2)


def pca_supernet(states):
    supernet = Supernet(SPACE, states[0].shape[-1], block_projection="pca")
    supernet.fit_projections(fitted_bases(states, SPACE.max_hidden_size))
    return supernet.eval()


def test_a_blocks_output_space_is_the_next_blocks_input_space():
    """What makes blocks trained apart chain: reading back what block b writes (output projection of
    block b, then input projection of block b+1) is the identity at every hidden size."""
    states = correlated_states(300, 40, SPACE.num_blocks + 1)
    supernet = pca_supernet(states)
    for hidden in SPACE.hidden_sizes:
        student = torch.randn(7, hidden)
        for block, following in zip(supernet.blocks[:-1], supernet.blocks[1:]):
            teacher_space = sliced_linear(student, block.output_projection)
            read_back = sliced_linear(teacher_space, following.input_projection, hidden)
            torch.testing.assert_close(read_back, student, rtol=0, atol=1e-3)


def test_block_loss_is_the_teacher_space_error_and_the_best_output_is_the_next_input():
    states = correlated_states(300, 40, SPACE.num_blocks + 1)
    supernet = pca_supernet(states)
    block, following, hidden = supernet.blocks[0], supernet.blocks[1], 24
    best = sliced_linear(states[1], following.input_projection, hidden)
    target = states[1]
    best_error = (sliced_linear(best, block.output_projection) - target).pow(2).sum()
    # Moving the student output anywhere away from what block 1 reads only adds error.
    for seed in range(3):
        nudged = best + 0.1 * torch.randn(best.shape, generator=torch.Generator().manual_seed(seed))
        assert (sliced_linear(nudged, block.output_projection) - target).pow(2).sum() > best_error


def test_pca_projections_are_frozen_and_learned_ones_train():
    states = teacher_like_states(2, 6, 20, SPACE.num_blocks + 1)
    rng = random.Random(0)
    archs = [SPACE.sample_block(rng) for _ in range(SPACE.num_blocks)]
    for mode, trains in (("pca", False), ("learned", True)):
        supernet = Supernet(SPACE, 20, block_projection=mode)
        supernet(states, None, archs).sum().backward()
        projection = supernet.blocks[0].input_projection.weight
        assert projection.requires_grad is trains and (projection.grad is not None) is trains
    with pytest.raises(ValueError, match="block_projection='svd'"):
        Supernet(SPACE, 20, block_projection="svd")
    with pytest.raises(ValueError, match="Got 0 boundary bases for 2 blocks"):
        Supernet(SPACE, 20, block_projection="pca").fit_projections([])
