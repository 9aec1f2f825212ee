"""Downstream metrics, computed offline with numpy: GLUE's official metric sets and SQuAD EM/F1.

`evaluate.load("glue", ...)` and `evaluate.load("squad")` fetch their code from the Hub, so the
project ships its own `evaluate` modules (`nasbert_hf/metric_modules/`), loaded by path with
`load_metric`; they wrap the pure functions below, the one place the formulas live. GLUE metrics
are fractions in [0, 1] (-1..1 for the correlations), as `evaluate` returns them; SQuAD EM/F1 are
percentages, as the official scripts print.
"""

import collections
import re
import string
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# The packaged `evaluate` modules
# ---------------------------------------------------------------------------------------------

METRIC_MODULES_DIR = Path(__file__).resolve().parent / "metric_modules"
METRIC_MODULES = ("glue", "squad", "squad_v2")


def load_metric(name, config_name=None, **kwargs):
    """`evaluate.load` of a metric module shipped in this package (`glue`, `squad`, `squad_v2`), by path.

    A path never touches the Hub, so this works offline (`load_metric("glue", config_name="sst2")`).
    `keep_in_memory` defaults to True: otherwise `evaluate` stages predictions in a locked Arrow file
    under `~/.cache/huggingface/metrics`, which concurrent runs of the same metric contend for.
    Other keyword arguments go to `evaluate.load`.
    """
    if name not in METRIC_MODULES:
        raise ValueError(f"Unknown metric {name!r}; the packaged metrics are {', '.join(METRIC_MODULES)}.")
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(METRIC_MODULES_DIR / name), config_name=config_name, **kwargs)


def squad_metric_info(description, inputs_description, citation):
    """The `evaluate.MetricInfo` of the `squad` and `squad_v2` modules: the same inputs (the Hub
    modules' format, `squad.METRIC_FEATURES`) and home page, their own texts."""
    import evaluate

    from .squad import METRIC_FEATURES

    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs_description,
        features=METRIC_FEATURES,
        reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
    )


# ---------------------------------------------------------------------------------------------
# Classification and regression metrics
# ---------------------------------------------------------------------------------------------


def _as_arrays(predictions, references):
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape or predictions.ndim != 1:
        raise ValueError(
            f"predictions and references must be 1-D and of equal length; got shapes "
            f"{predictions.shape} and {references.shape}."
        )
    if predictions.size == 0:
        raise ValueError("predictions and references are empty; a metric needs at least one example.")
    return predictions, references


def accuracy(predictions, references):
    predictions, references = _as_arrays(predictions, references)
    return float((predictions == references).mean())


def f1_score(predictions, references, positive_label=1):
    """Binary F1 of the class `positive_label` (GLUE's F1 for MRPC and QQP); 0.0 when it is never predicted nor gold."""
    predictions, references = _as_arrays(predictions, references)
    predicted, gold = predictions == positive_label, references == positive_label
    true_positives = float(np.sum(predicted & gold))
    denominator = float(predicted.sum() + gold.sum())
    return 2.0 * true_positives / denominator if denominator else 0.0


def matthews_corrcoef(predictions, references):
    """Matthews correlation of two label vectors (multi-class form, as scikit-learn); 0.0 when undefined."""
    predictions, references = _as_arrays(predictions, references)
    labels, encoded = np.unique(np.concatenate([references, predictions]), return_inverse=True)
    gold, predicted = encoded[: len(references)], encoded[len(references) :]
    confusion = np.zeros((len(labels), len(labels)), dtype=np.float64)
    np.add.at(confusion, (gold, predicted), 1.0)
    samples, correct = confusion.sum(), np.trace(confusion)
    gold_totals, predicted_totals = confusion.sum(axis=1), confusion.sum(axis=0)
    covariance = correct * samples - gold_totals @ predicted_totals
    spread = (samples**2 - predicted_totals @ predicted_totals) * (samples**2 - gold_totals @ gold_totals)
    # A constant predictor (or constant gold) has no correlation: defined as 0, as GLUE's scorer does.
    return float(covariance / np.sqrt(spread)) if spread > 0 else 0.0


def pearson_corrcoef(predictions, references):
    """Pearson correlation; NaN when either side is constant (the correlation is undefined there)."""
    predictions, references = _as_arrays(predictions, references)
    # Means in float64 too: a float32 mean of model scores would shift the result by its rounding.
    x = predictions.astype(np.float64) - predictions.mean(dtype=np.float64)
    y = references.astype(np.float64) - references.mean(dtype=np.float64)
    spread = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / spread) if spread > 0 else float("nan")


def rankdata(values):
    """Ranks starting at 1, tied values sharing the mean of their ranks (scipy's `method="average"`)."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values in sorted order; a run spans ranks start+1 .. end.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_ranks = (starts + 1 + ends) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(run_ranks, ends - starts)
    return ranks


def spearman_corrcoef(predictions, references):
    """Spearman correlation: Pearson correlation of the tie-averaged ranks."""
    predictions, references = _as_arrays(predictions, references)
    return pearson_corrcoef(rankdata(predictions), rankdata(references))


# ---------------------------------------------------------------------------------------------
# GLUE: the official metric set of each task
# ---------------------------------------------------------------------------------------------

# Metric functions by the names `evaluate`'s glue module reports them.
METRICS = {
    "accuracy": accuracy,
    "f1": f1_score,
    "matthews_correlation": matthews_corrcoef,
    "pearson": pearson_corrcoef,
    "spearmanr": spearman_corrcoef,
}

GLUE_METRICS = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
    "qqp": ("accuracy", "f1"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "ax": ("matthews_correlation",),
}


def glue_metrics(task, predictions, references):
    """The official GLUE metrics of `task` (e.g. `"cola"`, `"mrpc"`, `"stsb"`) as a dict name -> float.

    `predictions` are class ids, or scores for STS-B.
    """
    if task not in GLUE_METRICS:
        raise ValueError(f"Unknown GLUE task {task!r}; valid: {', '.join(GLUE_METRICS)}.")
    return {name: METRICS[name](predictions, references) for name in GLUE_METRICS[task]}


# ---------------------------------------------------------------------------------------------
# SQuAD: the official answer normalisation, exact match and token F1
# ---------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text):
    """Lower case, drop punctuation and the articles a/an/the, collapse white space (the official rule)."""
    text = "".join(character for character in text.lower() if character not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction, gold):
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction, gold):
    """Token-overlap F1 of normalised answers; with an empty side (v2.0 no-answer) it is 1 iff both are empty."""
    predicted_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted_tokens or not gold_tokens:
        return float(predicted_tokens == gold_tokens)
    common = collections.Counter(predicted_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_records(predictions, references):
    """`evaluate`'s SQuAD inputs (lists of `{"id", "prediction_text"}` and `{"id", "answers"}`) as the
    dicts `squad_metrics` takes: question id -> text, question id -> gold texts."""
    predicted = {record["id"]: record["prediction_text"] for record in predictions}
    gold = {record["id"]: list(record["answers"]["text"]) for record in references}
    for name, records, by_id in (("predictions", predictions, predicted), ("references", references, gold)):
        if len(by_id) != len(records):
            # A repeated id would silently drop a question from the scores.
            repeated = [key for key, count in collections.Counter(r["id"] for r in records).items() if count > 1]
            raise ValueError(f"{name} repeat question id(s) {repeated[:3]}; each question needs one record.")
    return predicted, gold


def squad_metrics(predictions, references):
    """Official SQuAD scores, in percent.

    `predictions`: dict question id -> predicted text ("" = no answer).
    `references`: dict question id -> list of gold answer texts (empty list = unanswerable, v2.0).
    Each question scores its best match over the gold answers. Returns `exact_match` and `f1`, plus
    `HasAns_*` / `NoAns_*` splits when some questions are unanswerable. A question with no
    prediction raises `ValueError` (the official script scores it 0; here it is always a bug).
    """
    missing = [question_id for question_id in references if question_id not in predictions]
    if missing:
        raise ValueError(f"No prediction for {len(missing)} question(s), e.g. {missing[:3]}.")
    if not references:
        raise ValueError("references are empty; SQuAD scores need at least one question.")
    exact, f1 = {}, {}
    for question_id, golds in references.items():
        golds = [gold for gold in golds if normalize_answer(gold)] or [""]
        prediction = predictions[question_id]
        exact[question_id] = max(squad_exact_match(prediction, gold) for gold in golds)
        f1[question_id] = max(squad_f1(prediction, gold) for gold in golds)
    scores = {"exact_match": 100.0 * np.mean(list(exact.values())), "f1": 100.0 * np.mean(list(f1.values()))}
    # As the official v2.0 script: a question is unanswerable when it has no gold answer at all.
    answerable = [question_id for question_id, golds in references.items() if golds]
    unanswerable = [question_id for question_id, golds in references.items() if not golds]
    if unanswerable:
        for name, subset in (("HasAns", answerable), ("NoAns", unanswerable)):
            scores[f"{name}_total"] = len(subset)
            if subset:
                scores[f"{name}_exact"] = 100.0 * np.mean([exact[question_id] for question_id in subset])
                scores[f"{name}_f1"] = 100.0 * np.mean([f1[question_id] for question_id in subset])
    return {name: float(value) if isinstance(value, np.floating) else value for name, value in scores.items()}
