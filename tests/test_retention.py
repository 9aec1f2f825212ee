"""The label-free retention probe (`nasbert_hf/retention.py`)."""

import numpy as np
import pytest
import torch
from conftest import save_random_teacher

from nasbert_hf.retention import (
    corpus_sentence_pairs,
    pair_cosines,
    retention_difference,
    roc_auc,
    sentence_embeddings,
    similarity_retention,
)
from nasbert_hf.metrics import spearman_corrcoef
from nasbert_hf.teacher import load_teacher


def test_roc_auc_is_the_probability_that_a_positive_outranks_a_negative():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([1, 2, 3], [0, 1, 1]) == 1.0 and roc_auc([3, 2, 1], [0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5], [0, 1]) == 0.5  # a tie counts half
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc([0.1, 0.2], [1, 1])


def test_corpus_pairs_are_half_consecutive_half_unrelated_and_reproducible():
    pairs = corpus_sentence_pairs(count=40, seed=3)
    assert len(pairs) == 40 and pairs == corpus_sentence_pairs(count=40, seed=3)
    assert pairs != corpus_sentence_pairs(count=40, seed=4)
    assert all(len(a.split()) >= 4 and len(b.split()) >= 4 for a, b in pairs)


def test_a_model_keeps_all_of_itself_and_padding_does_not_change_its_embeddings(tmp_path):
    teacher = load_teacher(save_random_teacher(tmp_path / "teacher"))
    pairs = corpus_sentence_pairs(count=20)
    reference = pair_cosines(teacher.model, teacher.tokenizer, pairs)
    assert similarity_retention(teacher.model, reference, teacher.tokenizer, pairs) == pytest.approx(100.0)
    texts = [pairs[0][0], pairs[1][1] + " " + pairs[2][1]]  # different lengths: the first is padded
    together = sentence_embeddings(teacher.model, teacher.tokenizer, texts)
    alone = torch.cat([sentence_embeddings(teacher.model, teacher.tokenizer, [text]) for text in texts])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    # A model that ranks pairs differently keeps less.
    other = load_teacher(save_random_teacher(tmp_path / "other", seed=1))
    assert similarity_retention(other.model, reference, teacher.tokenizer, pairs) < 90
    assert np.isfinite(reference).all()


def test_retention_difference_separates_a_real_gap_from_the_choice_of_pairs():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=500)
    close, far = teacher + 0.3 * rng.normal(size=500), teacher + 1.0 * rng.normal(size=500)
    assert retention_difference(close, close, teacher) == (0.0, 0.0, 0.0)
    gap, low, high = retention_difference(close, far, teacher, resamples=300)
    assert gap == pytest.approx(100 * (spearman_corrcoef(close, teacher) - spearman_corrcoef(far, teacher)))
    assert 0 < low < gap < high  # the better model is better on (nearly) every resample
    # Paired: both models are scored on each resample, so swapping them mirrors the interval.
    assert retention_difference(far, close, teacher, resamples=300) == pytest.approx((-gap, -high, -low))
    with pytest.raises(ValueError, match="same pairs"):
        retention_difference(close[:10], far, teacher)
