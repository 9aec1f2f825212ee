import json
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from conftest import tiny_config, tiny_tokenizer
from transformers import BertConfig, BertForSequenceClassification

from nasbert_hf import NasBertForSequenceClassification
from nasbert_hf.export_onnx import TASKS, eager_outputs, export_model, load_session, random_padded_inputs
from nasbert_hf.quantization import (
    INT8_TOLERANCE,
    check_dev_data,
    compare_accuracy,
    int8_error,
    load_dev_set,
    onnx_predictor,
    quantize_and_score,
    quantize_onnx,
    quantize_torch,
    relative_error,
    torch_predictor,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny all-op classifier (vocab of `tiny_tokenizer`) with its fp32 and int8 ONNX files."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("quantization")
    model = NasBertForSequenceClassification(tiny_config(vocab_size=len(tiny_tokenizer()))).eval()
    export_model(model, folder / "model.onnx", "sequence-classification")
    quantize_onnx(folder / "model.onnx", folder / "model_int8.onnx")
    return model, folder


def weight_bytes(path):
    return sum(onnx.numpy_helper.to_array(tensor).nbytes for tensor in onnx.load(str(path)).graph.initializer)


def test_onnx_int8_uses_integer_kernels_and_is_smaller(exported):
    _, folder = exported
    ops = Counter(node.op_type for node in onnx.load(str(folder / "model_int8.onnx")).graph.node)
    # Every linear weight (q, k, v, out, ffn, conv pointwise, pooler, classifier) runs as int8;
    # the depthwise convolutions stay float (ConvInteger is slow).
    assert ops["MatMulInteger"] >= 10 and ops["DynamicQuantizeLinear"] > 0
    assert ops["Conv"] == 2 and "ConvInteger" not in ops
    # Weights shrink about 4x (the file of so tiny a model is mostly graph metadata, so compare weights).
    assert weight_bytes(folder / "model_int8.onnx") < 0.5 * weight_bytes(folder / "model.onnx")
    assert not [path.name for path in folder.iterdir() if path.name.endswith(".tmp")]


def test_int8_stays_within_documented_tolerance(exported):
    model, folder = exported
    errors = int8_error(model, "sequence-classification", folder / "model_int8.onnx", quantize_torch(model))
    assert set(errors) == {"onnx", "torch"}
    for backend, error in errors.items():
        assert 0 < error < INT8_TOLERANCE, (backend, error)  # quantised (not a copy) and close


def test_onnx_int8_question_answering_within_tolerance(tmp_path):
    model = TASKS["question-answering"].auto_class.from_config(tiny_config(embedding_size=16)).eval()
    export_model(model, tmp_path / "model.onnx", "question-answering")
    quantize_onnx(tmp_path / "model.onnx", tmp_path / "model_int8.onnx")
    error = int8_error(model, "question-answering", onnx_int8=tmp_path / "model_int8.onnx")["onnx"]
    assert 0 < error < INT8_TOLERANCE


@pytest.mark.parametrize("task", list(TASKS))
def test_torch_int8_every_head(task):
    model = TASKS[task].auto_class.from_config(tiny_config()).eval()
    inputs = random_padded_inputs(100, 3, 12)
    before = eager_outputs(model, task, *inputs)
    quantized = quantize_torch(model)
    linears = [module for module in quantized.modules() if isinstance(module, torch.nn.Linear)]
    int8 = [module for module in quantized.modules() if isinstance(module, torch.ao.nn.quantized.dynamic.Linear)]
    assert not linears and int8
    assert 0 < int8_error(model, task, torch_int8=quantized)["torch"] < INT8_TOLERANCE
    # The float model is left as it was.
    assert isinstance(model.base_model.encoder.layers[0].query, torch.nn.Linear)
    after = eager_outputs(model, task, *inputs)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def test_torch_int8_plain_bert():
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    model = BertForSequenceClassification(config).eval()
    assert 0 < int8_error(model, "sequence-classification", torch_int8=quantize_torch(model))["torch"] < INT8_TOLERANCE


def test_relative_error():
    reference = np.array([[3.0, 4.0]])
    assert relative_error(reference, reference) == 0
    assert relative_error(reference, np.array([[3.0, 4.5]])) == pytest.approx(0.1)


def test_quantize_onnx_rejects_a_corrupted_file(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ValueError, match="broken.onnx is not a valid ONNX model"):
        quantize_onnx(tmp_path / "broken.onnx", tmp_path / "int8.onnx")
    assert not (tmp_path / "int8.onnx").exists()


def write_sst2_dev(folder, rows):
    folder.mkdir(parents=True)
    lines = ["sentence\tlabel"] + [f"{text}\t{label}" for text, label in rows]
    (folder / "dev.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_compare_accuracy_against_hand_counts(tmp_path):
    rows = [("a good movie", 1), ("a bad film", 0), ("not good", 0), ("great fun", 1), ("dull plot", 1)]
    data_dir = write_sst2_dev(tmp_path / "SST-2", rows)
    tokenizer = tiny_tokenizer()
    positive = {tokenizer.convert_tokens_to_ids(word) for word in ("good", "great")}

    def keyword(input_ids, attention_mask, token_type_ids):  # positive iff "good" or "great" occurs
        hit = np.isin(input_ids, list(positive)).any(-1)
        return np.stack([~hit, hit], -1).astype(np.float32)

    def always_negative(input_ids, attention_mask, token_type_ids):
        return np.tile([1.0, 0.0], (len(input_ids), 1))

    report = compare_accuracy({"keyword": keyword, "negative": always_negative}, tokenizer, data_dir, batch_size=2)
    # keyword: right on rows 1, 2, 4; wrong on "not good" and "dull plot" -> 3/5.
    assert report.task == "sst2" and report.examples == 5
    assert report.accuracy == {"keyword": pytest.approx(0.6), "negative": pytest.approx(0.4)}
    # They agree on the two rows where keyword says negative.
    assert report.agreement == {"keyword": 1.0, "negative": pytest.approx(0.4)}
    assert report.change("negative") == pytest.approx(-0.2)
    assert "| negative | 0.4000 | -0.2000 | 0.4000 |" in report.to_markdown()
    first = compare_accuracy({"keyword": keyword}, tokenizer, data_dir, max_examples=3)
    assert first.examples == 3 and first.accuracy["keyword"] == pytest.approx(2 / 3)


def test_compare_accuracy_rejects_a_model_with_other_labels(tmp_path):
    data_dir = write_sst2_dev(tmp_path / "SST-2", [("good", 1)])
    three = lambda input_ids, attention_mask, token_type_ids: np.zeros((len(input_ids), 3))  # noqa: E731
    with pytest.raises(ValueError, match="gives 3 logits but GLUE sst2 has 2 labels"):
        compare_accuracy({"three": three}, tiny_tokenizer(), data_dir)


def test_load_dev_set_needs_a_classification_task(tmp_path):
    with pytest.raises(ValueError, match="stsb is a regression task"):
        load_dev_set(tmp_path / "STS-B")
    with pytest.raises(ValueError, match="Unknown GLUE task 'movies'"):
        load_dev_set(tmp_path / "movies")


def test_all_backends_on_real_sst2(exported, shared_data):
    model, folder = exported
    predictors = {
        "torch-fp32": torch_predictor(model),
        "onnx-fp32": onnx_predictor(folder / "model.onnx"),
        "torch-int8": torch_predictor(quantize_torch(model)),
        "onnx-int8": onnx_predictor(load_session(folder / "model_int8.onnx")),
    }
    report = compare_accuracy(predictors, tiny_tokenizer(), shared_data / "glue" / "SST-2", max_length=32,
                              max_examples=300)
    assert report.examples == 300
    assert report.agreement["onnx-fp32"] >= 0.99
    # A random model's accuracy is near chance, and int8 rarely flips its predictions.
    for backend in predictors:
        assert 0.3 < report.accuracy[backend] < 0.7
        assert report.agreement[backend] >= 0.8


def test_quantize_and_score_fills_the_export_report(tmp_path):
    """The workflow of `nasbert export-onnx --quantize int8 --dev-data DIR`, as a library call."""
    from nasbert_hf.export_onnx import REPORT_FILE, export_onnx

    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    tokenizer = tiny_tokenizer()
    NasBertForSequenceClassification(tiny_config(vocab_size=len(tokenizer))).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data_dir = write_sst2_dev(tmp_path / "SST-2", [("a good movie", 1), ("a bad film", 0), ("great fun", 1)])
    with pytest.raises(ValueError, match="needs a sequence-classification model; this export is 'masked-lm'"):
        check_dev_data(model_dir, data_dir, "masked-lm")
    tokenizer = check_dev_data(model_dir, data_dir, "sequence-classification")
    report = export_onnx(model_dir, tmp_path / "onnx")
    report = quantize_and_score(model_dir, tmp_path / "onnx", report, "int8", data_dir, tokenizer, max_length=16)
    assert report.int8["onnx_file"] == "model_int8.onnx" and (tmp_path / "onnx" / "model_int8.onnx").is_file()
    assert set(report.dev["accuracy"]) == {"torch-fp32", "onnx-fp32", "torch-int8", "onnx-int8"}
    assert report.dev["examples"] == 3 and report.dev["agreement"]["onnx-fp32"] == 1.0
    saved = json.loads((tmp_path / "onnx" / REPORT_FILE).read_text())
    assert saved["int8"] == report.int8 and saved["dev"] == report.dev
