"""SQuAD v1.1 / v2.0: reading, sliding-window features and n-best answer post-processing.

Examples are rows `id`, `title`, `context`, `question`, `answers` (`{"text": [...], "answer_start": [...]}`,
both empty for an unanswerable v2.0 question), as the Hub's `rajpurkar/squad` has them. A context
longer than the model's window is split into several overlapping features (`doc_stride` tokens
of overlap, using the fast tokenizer's overflow and offset mapping); predictions over all
features of a question are merged back into one answer text.
"""

import collections
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, Sequence, Value

from .folders import read_json

HUB_DATASETS = {"1.1": "rajpurkar/squad", "2.0": "rajpurkar/squad_v2"}
# Inputs are `[CLS] question [SEP] context [SEP]`: a span at [CLS] means "no answer in this window".
CLS_INDEX = 0
LOCAL_FILES = {"train": "train-v{version}.json", "validation": "dev-v{version}.json"}

EXAMPLE_FEATURES = Features(
    {
        "id": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": {"text": Sequence(Value("string")), "answer_start": Sequence(Value("int32"))},
    }
)
# Inputs of the packaged `squad` / `squad_v2` metric modules (those of the Hub's modules).
METRIC_FEATURES = Features(
    {
        "predictions": {"id": Value("string"), "prediction_text": Value("string")},
        "references": {"id": Value("string"), "answers": EXAMPLE_FEATURES["answers"]},
    }
)


def _check_version(version):
    version = str(version)
    if version not in HUB_DATASETS:
        raise ValueError(f"Unknown SQuAD version {version!r}; valid: {', '.join(HUB_DATASETS)}.")
    return version


def read_squad_json(path):
    """Read an official SQuAD JSON file (v1.1 or v2.0) into a `Dataset` of examples.

    Malformed JSON, a question that lacks a field, or an answer whose `answer_start` does not point
    at its text in the context raises `ValueError` naming the file (and the position or question id).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD file not found: {path}")
    document = read_json(path)
    if not isinstance(document, dict) or "data" not in document:
        raise ValueError(f"{path}: not a SQuAD file (expected a JSON object with a 'data' list).")
    rows = {name: [] for name in EXAMPLE_FEATURES}
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for question in paragraph["qas"]:
                answers = _read_answers(question, context, path)
                rows["id"].append(str(question["id"]))
                rows["title"].append(article.get("title", ""))
                rows["context"].append(context)
                rows["question"].append(question["question"])
                rows["answers"].append(answers)
    return Dataset.from_dict(rows, features=EXAMPLE_FEATURES)


def _read_answers(question, context, path):
    where = f"{path}: question {question.get('id', '?')!r}"
    if "id" not in question or "question" not in question or "answers" not in question:
        raise ValueError(f"{where}: a SQuAD question needs 'id', 'question' and 'answers'; got {sorted(question)}.")
    # v2.0 unanswerable questions keep their plausible answers elsewhere; their `answers` is empty.
    answers = [] if question.get("is_impossible") else question["answers"]
    texts, starts = [], []
    for answer in answers:
        text, start = answer.get("text"), answer.get("answer_start")
        if not isinstance(text, str) or not isinstance(start, int) or context[start : start + len(text)] != text:
            raise ValueError(f"{where}: answer {answer!r} does not match the context at its answer_start.")
        texts.append(text)
        starts.append(start)
    return {"text": texts, "answer_start": starts}


def load_squad(version="1.1", data_dir=None, train_file=None, validation_file=None, splits=("train", "validation")):
    """SQuAD examples of `splits` (`train`, `validation`) as a `DatasetDict`: from explicit files, from
    `data_dir` (`train-v1.1.json`, `dev-v1.1.json`, as downloaded), or else from the Hub
    (`rajpurkar/squad`, `rajpurkar/squad_v2`)."""
    version = _check_version(version)
    unknown = [split for split in splits if split not in LOCAL_FILES]
    if unknown:
        raise ValueError(f"Unknown SQuAD split(s) {unknown}; valid: {', '.join(LOCAL_FILES)}.")
    files = {"train": train_file, "validation": validation_file}
    if data_dir is not None:
        for split, pattern in LOCAL_FILES.items():
            files[split] = files[split] or Path(data_dir) / pattern.format(version=version)
    if any(files[split] for split in splits):
        missing = [split for split in splits if not files[split]]
        if missing:
            raise ValueError(f"No SQuAD file given for split(s) {missing}: pass data_dir or the *_file argument.")
        return DatasetDict({split: read_squad_json(files[split]) for split in splits})
    from datasets import load_dataset

    return DatasetDict(
        {split: load_dataset(HUB_DATASETS[version], split=split).cast(EXAMPLE_FEATURES) for split in splits}
    )


def _check_tokenizer(tokenizer):
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"SQuAD features need a fast tokenizer (offset mappings); {type(tokenizer).__name__} is not one."
        )
    # Question first, context second, [CLS] at position 0: the BERT layout the null score relies on.
    if tokenizer.padding_side != "right":
        raise ValueError(f"SQuAD features need padding_side='right'; the tokenizer has {tokenizer.padding_side!r}.")


def _tokenize(examples, tokenizer, max_seq_length, doc_stride):
    _check_tokenizer(tokenizer)
    # The overlap must leave room for new context in each window (the tokenizer checks the exact room).
    if not 0 <= doc_stride < max_seq_length:
        raise ValueError(f"doc_stride={doc_stride} must be at least 0 and under max_seq_length={max_seq_length}.")
    # Leading spaces in a few questions waste window tokens and confuse truncation.
    questions = [question.lstrip() for question in examples["question"]]
    return tokenizer(
        questions,
        examples["context"],
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )


def prepare_train_features(examples, tokenizer, max_seq_length=384, doc_stride=128):
    """Batched `Dataset.map` function: sliding-window features with `start_positions`/`end_positions`.

    A window that does not contain the whole answer (and every unanswerable question) points both
    positions at the [CLS] token, as in BERT's SQuAD recipe.
    """
    encoded = _tokenize(examples, tokenizer, max_seq_length, doc_stride)
    sample_map = encoded.pop("overflow_to_sample_mapping")
    encoded["start_positions"], encoded["end_positions"] = [], []
    for i, offsets in enumerate(encoded.pop("offset_mapping")):
        answers = examples["answers"][sample_map[i]]
        start, end = CLS_INDEX, CLS_INDEX
        if answers["answer_start"]:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            sequence_ids = encoded.sequence_ids(i)
            context = [k for k, sequence in enumerate(sequence_ids) if sequence == 1]
            first, last = context[0], context[-1]
            if offsets[first][0] <= start_char and offsets[last][1] >= end_char:
                start = next(k for k in range(first, last + 1) if offsets[k][1] > start_char)
                end = next(k for k in range(last, first - 1, -1) if offsets[k][0] < end_char)
        encoded["start_positions"].append(start)
        encoded["end_positions"].append(end)
    return encoded


def prepare_validation_features(examples, tokenizer, max_seq_length=384, doc_stride=128):
    """Batched `Dataset.map` function: sliding-window features keeping `example_id` and an
    `offset_mapping` that is None outside the context (so answers can only come from the context)."""
    encoded = _tokenize(examples, tokenizer, max_seq_length, doc_stride)
    sample_map = encoded.pop("overflow_to_sample_mapping")
    encoded["example_id"] = []
    for i in range(len(encoded["input_ids"])):
        sequence_ids = encoded.sequence_ids(i)
        encoded["example_id"].append(examples["id"][sample_map[i]])
        encoded["offset_mapping"][i] = [
            offset if sequence_ids[k] == 1 else None for k, offset in enumerate(encoded["offset_mapping"][i])
        ]
    return encoded


def _feature_candidates(start_logits, end_logits, offsets, n_best_size, max_answer_length):
    """(score, start_char, end_char) of the best spans of one feature, inside its context."""
    start_indexes = np.argsort(start_logits)[-1 : -n_best_size - 1 : -1]
    end_indexes = np.argsort(end_logits)[-1 : -n_best_size - 1 : -1]
    candidates = []
    for start in start_indexes:
        for end in end_indexes:
            if start >= len(offsets) or end >= len(offsets) or offsets[start] is None or offsets[end] is None:
                continue
            if end < start or end - start + 1 > max_answer_length:
                continue
            candidates.append((float(start_logits[start] + end_logits[end]), offsets[start][0], offsets[end][1]))
    return candidates


def postprocess_qa_predictions(
    examples,
    features,
    start_logits,
    end_logits,
    n_best_size=20,
    max_answer_length=30,
    version_2_with_negative=False,
    null_score_diff_threshold=0.0,
):
    """Turn per-feature start/end logits into one answer text per question id.

    For each question, the `n_best_size` best starts and ends of every feature are paired into spans
    of at most `max_answer_length` tokens inside the context; the best summed logit wins. With
    `version_2_with_negative`, the answer is "" when the best null score ([CLS] start + end, the
    minimum over the question's features) beats the best span by more than `null_score_diff_threshold`.
    Returns `(predictions, null_score_diffs)`: dicts question id -> text / (null score - best span score).
    """
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    if len(features) != len(start_logits) or start_logits.shape != end_logits.shape:
        raise ValueError(
            f"Got {len(start_logits)} start and {len(end_logits)} end logit rows for {len(features)} features; "
            "pass the logits of exactly these features, in order."
        )
    features_by_example = collections.defaultdict(list)
    for index, example_id in enumerate(features["example_id"]):
        features_by_example[example_id].append(index)
    offsets_all = features["offset_mapping"]
    predictions, null_score_diffs = {}, {}
    for example in examples:
        candidates, null_score = [], None
        for index in features_by_example[example["id"]]:
            offsets = offsets_all[index]
            feature_null = float(start_logits[index][CLS_INDEX] + end_logits[index][CLS_INDEX])
            null_score = feature_null if null_score is None else min(null_score, feature_null)
            candidates += _feature_candidates(
                start_logits[index], end_logits[index], offsets, n_best_size, max_answer_length
            )
        if null_score is None:
            raise ValueError(f"Question {example['id']!r} has no features; build the features from these examples.")
        best = max(candidates, default=None)
        best_text = example["context"][best[1] : best[2]] if best else ""
        best_score = best[0] if best else -np.inf
        null_score_diffs[example["id"]] = null_score - best_score
        if version_2_with_negative and null_score - best_score > null_score_diff_threshold:
            best_text = ""
        predictions[example["id"]] = best_text
    return predictions, null_score_diffs


def squad_references(examples):
    """Dict question id -> gold answer texts (empty for unanswerable), as `metrics.squad_metrics` takes it."""
    return {example["id"]: list(example["answers"]["text"]) for example in examples}


def squad_metric_inputs(examples, predictions):
    """`predictions` (question id -> text) and the gold answers of `examples`, as the keyword arguments
    of the packaged `squad` / `squad_v2` metrics' `compute` (the Hub modules' input format)."""
    return {
        "predictions": [{"id": question_id, "prediction_text": text} for question_id, text in predictions.items()],
        "references": [{"id": example["id"], "answers": example["answers"]} for example in examples],
    }
