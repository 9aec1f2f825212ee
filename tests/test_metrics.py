import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nasbert_hf.metrics import (
    GLUE_METRICS,
    accuracy,
    f1_score,
    glue_metrics,
    load_metric,
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


# ---------------------------------------------------------------------------------------------
# The packaged `evaluate` modules, loaded offline
# ---------------------------------------------------------------------------------------------

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


@pytest.fixture
def offline(monkeypatch):
    """No network: the Hub switched off by its variables, and any socket connection refused."""
    import socket

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        monkeypatch.setenv(name, "1")

    def refuse(self, address):
        raise OSError(f"network is off in this test (connection to {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def glue_inputs(task, seed=0):
    """Predictions and references shaped like a task's: 3 classes for MNLI, tied float scores for STS-B."""
    rng = np.random.default_rng(seed)
    if task == "stsb":
        gold = rng.integers(0, 11, 300).astype(np.float32) / 2  # 0, 0.5, ..., 5: many ties
        return (gold + rng.normal(0, 1.0, 300)).astype(np.float32), gold
    classes = 3 if task == "mnli" else 2
    gold = rng.integers(0, classes, 300)
    return np.where(rng.random(300) < 0.7, gold, rng.integers(0, classes, 300)), gold


def reference_implementation(name, predictions, references):
    """The same metric from scikit-learn / SciPy."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    functions = {
        "accuracy": lambda: sklearn_metrics.accuracy_score(references, predictions),
        "f1": lambda: sklearn_metrics.f1_score(references, predictions),
        "matthews_correlation": lambda: sklearn_metrics.matthews_corrcoef(references, predictions),
        "pearson": lambda: stats.pearsonr(predictions.astype(np.float64), references.astype(np.float64)).statistic,
        "spearmanr": lambda: stats.spearmanr(predictions, references).statistic,
    }
    return float(functions[name]())


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_glue_module_offline_matches_metrics_and_sklearn_scipy(task, offline):
    predictions, references = glue_inputs(task)
    scores = load_metric("glue", config_name=task).compute(predictions=predictions, references=references)
    assert scores == glue_metrics(task, predictions, references)  # exactly: the module wraps these functions
    assert set(scores) == set(GLUE_METRICS[task])
    for name, value in scores.items():
        assert value == pytest.approx(reference_implementation(name, predictions, references), rel=1e-12, abs=1e-12)


def test_glue_module_mnli_dev_configs_and_bad_names(offline):
    predictions, references = glue_inputs("mnli")
    for config in ("mnli_matched", "mnli_mismatched"):
        scores = load_metric("glue", config_name=config).compute(predictions=predictions, references=references)
        assert scores == {"accuracy": accuracy(predictions, references)}
    with pytest.raises(ValueError, match="'sst5'.*cola, sst2"):
        load_metric("glue", config_name="sst5")
    with pytest.raises(ValueError, match="'bleu'.*glue, squad, squad_v2"):
        load_metric("bleu")


def squad_records_of(predictions, references):
    """`evaluate`-format inputs for the dict-form predictions/references of the tests above."""
    return {
        "predictions": [{"id": key, "prediction_text": text} for key, text in predictions.items()],
        "references": [
            {"id": key, "answers": {"text": golds, "answer_start": [0] * len(golds)}} for key, golds in references.items()
        ],
    }


def test_squad_modules_offline_match_metrics(offline):
    references = {"q1": ["Denver Broncos", "the Broncos"], "q2": ["1990"], "q3": ["in Paris, France"]}
    predictions = {"q1": "Broncos", "q2": "1990", "q3": "Paris"}
    scores = load_metric("squad").compute(**squad_records_of(predictions, references))
    assert scores == squad_metrics(predictions, references)
    assert scores == pytest.approx({"exact_match": 200 / 3, "f1": 100 * (1 + 1 + 1 / 2) / 3})
    # v2.0: unanswerable questions and their HasAns/NoAns splits.
    references_v2 = {"a": ["yes"], "b": [], "c": []}
    predictions_v2 = {"a": "yes", "b": "", "c": "something"}
    scores_v2 = load_metric("squad_v2").compute(**squad_records_of(predictions_v2, references_v2))
    assert scores_v2 == squad_metrics(predictions_v2, references_v2)
    assert scores_v2["NoAns_total"] == 2 and scores_v2["NoAns_f1"] == 50.0 and scores_v2["HasAns_exact"] == 100.0


def test_squad_modules_reject_what_they_cannot_score(offline):
    with pytest.raises(ValueError, match=r"no gold answer, e\.g\. \['b'\].*squad_v2"):
        load_metric("squad").compute(**squad_records_of({"a": "yes", "b": ""}, {"a": ["yes"], "b": []}))
    inputs = squad_records_of({"a": "x", "b": "y"}, {"a": ["x"], "b": ["y"]})
    inputs["references"][1]["id"] = "a"
    with pytest.raises(ValueError, match=r"references repeat question id\(s\) \['a'\]"):
        load_metric("squad_v2").compute(**inputs)


INSTALLED_CHECK = """
import socket, sys
def refuse(self, address):
    raise OSError("network is off")
socket.socket.connect = refuse
import nasbert_hf.metrics as metrics
assert metrics.__file__.startswith(sys.argv[1]), metrics.__file__  # the built copy, not the checkout
scores = metrics.load_metric("glue", config_name="mrpc").compute(predictions=[1, 0, 1], references=[1, 1, 1])
squad = metrics.load_metric("squad_v2").compute(
    predictions=[{"id": "a", "prediction_text": ""}], references=[{"id": "a", "answers": {"text": [], "answer_start": []}}])
print(scores["f1"], squad["exact_match"])
"""


def test_installed_package_ships_the_modules_and_loads_them_offline(tmp_path):
    """Build the package as a non-editable install would (setup.py build_py), then load the built
    modules in a fresh process with an empty Hugging Face cache and no network."""
    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("nasbert_hf", "modeling"):
        shutil.copytree(root / name, source / name, ignore=ignore)
    for name in ("setup.py", "README.md"):
        shutil.copy(root / name, source / name)
    built = tmp_path / "built"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(built)], cwd=source,
                   check=True, capture_output=True)
    for module in ("glue/glue.py", "squad/squad.py", "squad_v2/squad_v2.py"):
        assert (built / "nasbert_hf" / "metric_modules" / module).is_file(), module
    cache = tmp_path / "hf-home"
    env = dict(os.environ, PYTHONPATH=str(built), HF_HOME=str(cache), HF_MODULES_CACHE=str(cache / "modules"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", INSTALLED_CHECK, str(built)], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["0.8", "100.0"]
    # No Arrow cache file was staged (evaluate leaves empty folders only): predictions stay in memory.
    assert not [path for path in (cache / "metrics").rglob("*") if path.is_file()]
