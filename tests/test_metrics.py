import math

import numpy as np
import pytest

from nasbert_hf.metrics import (
    accuracy,
    f1_score,
    glue_metrics,
    matthews_corrcoef,
    normalize_answer,
    pearson_corrcoef,
    rankdata,
    spearman_corrcoef,
    squad_exact_match,
    squad_f1,
    squad_metrics,
)

# Hand-checked binary case: TP=2, TN=1, FP=1, FN=1.
PREDICTIONS = [1, 1, 0, 1, 0]
REFERENCES = [1, 0, 0, 1, 1]


def test_accuracy_and_f1_by_hand():
    assert accuracy(PREDICTIONS, REFERENCES) == pytest.approx(3 / 5)
    # precision = recall = 2/3
    assert f1_score(PREDICTIONS, REFERENCES) == pytest.approx(2 / 3)
    # F1 of class 0: TP=1, FP=1, FN=1
    assert f1_score(PREDICTIONS, REFERENCES, positive_label=0) == pytest.approx(0.5)


def test_matthews_by_hand():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2)
    assert matthews_corrcoef(PREDICTIONS, REFERENCES) == pytest.approx(1 / 6)
    assert matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)
    # A constant predictor (what a collapsed CoLA model does) scores 0, not NaN.
    assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 1, 0]) == 0.0


def test_matthews_multiclass_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 200)
    predicted = np.where(rng.random(200) < 0.6, gold, rng.integers(0, 3, 200))
    assert matthews_corrcoef(predicted, gold) == pytest.approx(sklearn_metrics.matthews_corrcoef(gold, predicted))


def test_pearson_by_hand():
    assert pearson_corrcoef([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    # deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): 4 / sqrt(5 * 5)
    assert pearson_corrcoef([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(pearson_corrcoef([1, 1, 1], [1, 2, 3]))


def test_rankdata_averages_ties():
    assert rankdata([10, 20, 20, 20, 5]).tolist() == [2.0, 4.0, 4.0, 4.0, 1.0]
    assert rankdata([3.0, 1.0, 2.0]).tolist() == [3.0, 1.0, 2.0]


def test_spearman_with_ties_by_hand():
    # ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert spearman_corrcoef([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10))
    # Any monotone relation has Spearman 1, whatever its Pearson.
    assert spearman_corrcoef([1, 2, 3, 4, 5], [1, 4, 9, 16, 100]) == pytest.approx(1.0)
    assert spearman_corrcoef([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_matches_scipy_on_tied_scores():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 6, 300).astype(float)  # STS-B-like scores with many ties
    predicted = np.round(gold + rng.normal(0, 1.5, 300))
    assert spearman_corrcoef(predicted, gold) == pytest.approx(stats.spearmanr(predicted, gold).statistic)
    assert pearson_corrcoef(predicted, gold) == pytest.approx(stats.pearsonr(predicted, gold).statistic)


def test_glue_metric_sets():
    assert glue_metrics("mrpc", PREDICTIONS, REFERENCES) == pytest.approx({"accuracy": 0.6, "f1": 2 / 3})
    assert glue_metrics("cola", PREDICTIONS, REFERENCES) == pytest.approx({"matthews_correlation": 1 / 6})
    stsb = glue_metrics("stsb", [1, 2, 2, 3], [1, 2, 3, 4])
    assert set(stsb) == {"pearson", "spearmanr"} and stsb["spearmanr"] == pytest.approx(3 / math.sqrt(10))
    assert set(glue_metrics("qqp", [0, 1], [0, 1])) == {"accuracy", "f1"}
    for task in ("sst2", "mnli", "qnli", "rte", "wnli"):
        assert set(glue_metrics(task, [0, 1], [0, 1])) == {"accuracy"}


def test_bad_metric_inputs_raise():
    with pytest.raises(ValueError, match="sst-5"):
        glue_metrics("sst-5", [0], [0])
    with pytest.raises(ValueError, match=r"\(3,\) and \(2,\)"):
        accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


def test_squad_normalisation_and_scores_by_hand():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert squad_exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    # prediction (cat, sat) vs gold (cat, sat, down): precision 1, recall 2/3
    assert squad_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert squad_f1("dog", "cat") == 0.0
    assert squad_f1("", "") == 1.0 and squad_f1("cat", "") == 0.0


def test_squad_metrics_takes_best_gold_and_reports_percent():
    references = {"q1": ["Denver Broncos", "the Broncos"], "q2": ["1990"], "q3": ["in Paris, France"]}
    predictions = {"q1": "Broncos", "q2": "1990", "q3": "Paris"}
    scores = squad_metrics(predictions, references)
    # q1: EM 1 vs "the Broncos"; q2: EM 1; q3: (paris) vs (in, paris, france): F1 2*(1*1/3)/(1+1/3) = 1/2
    assert scores["exact_match"] == pytest.approx(200 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 1 + 1 / 2) / 3)
    assert "HasAns_exact" not in scores


def test_squad_v2_scores_unanswerable_questions():
    references = {"a": ["yes"], "b": [], "c": []}
    predictions = {"a": "yes", "b": "", "c": "something"}
    scores = squad_metrics(predictions, references)
    assert scores["exact_match"] == pytest.approx(200 / 3) and scores["f1"] == pytest.approx(200 / 3)
    assert scores["HasAns_total"] == 1 and scores["HasAns_exact"] == 100.0
    assert scores["NoAns_total"] == 2 and scores["NoAns_f1"] == 50.0


def test_squad_metrics_missing_prediction_raises():
    with pytest.raises(ValueError, match="q2"):
        squad_metrics({"q1": "x"}, {"q1": ["x"], "q2": ["y"]})
