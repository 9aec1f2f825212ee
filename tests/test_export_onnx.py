import json

import numpy as np
import onnx
import pytest
import torch
from conftest import ALL_OPS, tiny_config, tiny_tokenizer
from transformers import AutoConfig, AutoTokenizer, BertConfig, BertForSequenceClassification

import nasbert_hf  # noqa: F401  (registers the Auto classes)
from nasbert_hf import NasBertForSequenceClassification
from nasbert_hf.cli import main
from nasbert_hf.export_onnx import (
    ONNX_FILE,
    REPORT_FILE,
    TASKS,
    OnnxParityError,
    eager_outputs,
    export_model,
    export_onnx,
    load_model,
    load_session,
    random_padded_inputs,
    run_session,
    task_of,
)

def save_tiny_model(folder, task="sequence-classification", **config_kwargs):
    """A random tiny NasBert model with a tokenizer, saved as `nasbert convert` would."""
    tokenizer = tiny_tokenizer()
    model = TASKS[task].auto_class.from_config(tiny_config(vocab_size=len(tokenizer), **config_kwargs))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def assert_matches_eager(model, session, task, batch, length, seed=7):
    inputs = random_padded_inputs(model.config.vocab_size, batch, length, seed)
    expected = eager_outputs(model.eval(), task, *inputs)
    actual = run_session(session, *(tensor.numpy() for tensor in inputs))
    for name in TASKS[task].outputs:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-4, rtol=0)


@pytest.mark.parametrize("task", list(TASKS))
def test_every_head_with_every_op_exports_and_matches(tmp_path, task):
    # Embedding projection included (embedding_size != hidden_size).
    model = TASKS[task].auto_class.from_config(tiny_config(embedding_size=16)).eval()
    path = tmp_path / "model.onnx"
    diff = export_model(model, path, task)
    assert diff < 1e-4
    session = load_session(path)
    assert [item.name for item in session.get_outputs()] == list(TASKS[task].outputs)
    for item in session.get_inputs():  # dynamic batch and sequence axes
        assert item.type == "tensor(int64)" and item.shape == ["batch", "sequence"], item
    assert_matches_eager(model, session, task, batch=5, length=40)
    assert_matches_eager(model, session, task, batch=1, length=64)


# mha and ffn are in every head's model above; conv kernels and an all-identity encoder are the edge cases.
@pytest.mark.parametrize("layers", [["conv:3", "conv:5", "conv:7"], ["id"]], ids=str)
def test_each_op_type_alone_exports(tmp_path, layers):
    model = NasBertForSequenceClassification(tiny_config(layers)).eval()
    export_model(model, tmp_path / "model.onnx", "sequence-classification")
    assert_matches_eager(model, load_session(tmp_path / "model.onnx"), "sequence-classification", 3, 21)


def test_conv_model_ignores_padding_like_eager(tmp_path):
    # The conv op zeroes padded positions; the exported graph must too, so a real token's output
    # is the same whatever follows it as padding.
    model = TASKS["token-classification"].auto_class.from_config(tiny_config(["conv:7", "ffn:64", "conv:3"])).eval()
    export_model(model, tmp_path / "model.onnx", "token-classification")
    session = load_session(tmp_path / "model.onnx")
    input_ids, attention_mask, token_type_ids = random_padded_inputs(100, 1, 10, seed=3)
    short = run_session(session, input_ids[:, :6].numpy(), attention_mask[:, :6].numpy(), token_type_ids[:, :6].numpy())
    attention_mask[:, 6:] = 0
    padded = run_session(session, input_ids.numpy(), attention_mask.numpy(), token_type_ids.numpy())
    np.testing.assert_allclose(padded["logits"][:, :6], short["logits"], atol=1e-5)


def test_plain_bert_exports(tmp_path):
    # The latency benchmark exports transformers' own BERT shapes through the same path.
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    model = BertForSequenceClassification(config).eval()
    assert export_model(model, tmp_path / "bert.onnx", "sequence-classification") < 1e-4


def test_failed_parity_check_writes_nothing(tmp_path):
    model = NasBertForSequenceClassification(tiny_config(["mha:4"])).eval()
    with pytest.raises(OnnxParityError, match="refusing to write"):
        export_model(model, tmp_path / "model.onnx", "sequence-classification", atol=0.0)
    assert list(tmp_path.iterdir()) == []


def test_export_onnx_writes_self_describing_folder(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model", "question-answering")
    report = export_onnx(model_dir, tmp_path / "onnx")
    out = tmp_path / "onnx"
    assert report.task == "question-answering"  # taken from the saved head
    assert report.max_abs_diff < 1e-4
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["onnx_file"] == ONNX_FILE and saved["opset"] == report.opset >= 18
    assert AutoConfig.from_pretrained(out).layers == ALL_OPS
    assert AutoTokenizer.from_pretrained(out)("good film")["input_ids"] == tiny_tokenizer()("good film")["input_ids"]
    onnx.checker.check_model(str(out / ONNX_FILE))
    assert not [path.name for path in out.iterdir() if path.name.endswith(".tmp")]


def test_task_of_reads_the_saved_head():
    assert task_of(BertConfig(architectures=["BertForMaskedLM"])) == "masked-lm"
    assert task_of(tiny_config(architectures=["NasBertForTokenClassification"])) == "token-classification"
    assert task_of(tiny_config()) == "feature-extraction"


def test_unknown_task_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="Unknown task 'summarization'.*masked-lm"):
        load_model(save_tiny_model(tmp_path / "model"), "summarization")


def test_model_dir_without_weights_is_a_clear_error(tmp_path, capsys):
    tiny_config().save_pretrained(tmp_path / "config-only")
    with pytest.raises(FileNotFoundError, match="no model weights"):
        export_onnx(tmp_path / "config-only", tmp_path / "onnx")
    assert main(["export-onnx", str(tmp_path / "config-only"), "--out", str(tmp_path / "onnx")]) == 2
    assert "no model weights (model.safetensors)" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(tmp_path / "missing", tmp_path / "onnx")


def test_corrupted_onnx_file_is_a_clear_error(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])],
        [onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")],
    )
    data = onnx.helper.make_model(graph).SerializeToString()
    (tmp_path / "valid.onnx").write_bytes(data)
    load_session(tmp_path / "valid.onnx")
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.onnx").write_bytes(b"not an onnx model at all")
    for name in ("truncated.onnx", "garbage.onnx"):
        with pytest.raises(ValueError, match=f"{name} is not a valid ONNX model"):
            load_session(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_session(tmp_path / "absent.onnx")


def test_random_padded_inputs_pad_every_row_but_the_first():
    input_ids, attention_mask, token_type_ids = random_padded_inputs(50, batch=6, length=20, seed=1)
    assert attention_mask[0].all() and not attention_mask.all()
    assert torch.equal(input_ids == 0, attention_mask == 0)  # pad id 0 exactly where masked
    assert not token_type_ids[attention_mask == 0].any()


def test_cli_exports_and_quantizes(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "model")
    out = tmp_path / "onnx"
    assert main(["export-onnx", str(model_dir), "--out", str(out), "--quantize", "int8"]) == 0
    printed = capsys.readouterr().out
    assert "max |ONNX Runtime - PyTorch|" in printed and "model_int8.onnx" in printed
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["int8"]["onnx_file"] == "model_int8.onnx"
    assert set(report["int8"]["relative_error_random_tokens"]) == {"onnx", "torch"}
    assert (out / "model_int8.onnx").stat().st_size < (out / ONNX_FILE).stat().st_size


def test_cli_reports_accuracy_on_real_sst2(tmp_path, shared_data, capsys):
    model_dir = save_tiny_model(tmp_path / "model")
    out = tmp_path / "onnx"
    # int8 backends join with --quantize (tests/test_quantization.py covers them on the same data).
    argv = ["export-onnx", str(model_dir), "--out", str(out), "--dev-data", str(shared_data / "glue" / "SST-2"),
            "--max-length", "32"]
    assert main(argv) == 0
    dev = json.loads((out / REPORT_FILE).read_text())["dev"]
    assert dev["task"] == "sst2" and dev["examples"] == 872
    assert set(dev["accuracy"]) == {"torch-fp32", "onnx-fp32"}
    assert dev["agreement"]["onnx-fp32"] >= 0.99  # fp32 ONNX only differs from PyTorch by rounding
    assert abs(dev["accuracy"]["onnx-fp32"] - dev["accuracy"]["torch-fp32"]) <= 0.01
    assert "| onnx-fp32 |" in capsys.readouterr().out


def test_cli_dev_data_needs_a_classifier(tmp_path, shared_data, capsys):
    model_dir = save_tiny_model(tmp_path / "model", "masked-lm")
    argv = ["export-onnx", str(model_dir), "--out", str(tmp_path / "onnx"),
            "--dev-data", str(shared_data / "glue" / "SST-2")]
    assert main(argv) == 2
    assert "needs a sequence-classification model; this export is 'masked-lm'" in capsys.readouterr().err
    assert not (tmp_path / "onnx").exists()  # checked before exporting


def test_cli_checks_dev_data_before_exporting(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "model")
    (tmp_path / "movies").mkdir()
    argv = ["export-onnx", str(model_dir), "--out", str(tmp_path / "onnx"), "--dev-data", str(tmp_path / "movies")]
    assert main(argv) == 2
    assert "Unknown GLUE task 'movies'" in capsys.readouterr().err
    assert main(argv[:-1] + [str(tmp_path / "absent")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "onnx").exists()


def test_teacher_shaped_ops_and_a_factorised_word_table_export(tmp_path):
    # What teacher-anchored searches export: some of a teacher's heads at its head size, and only the
    # word table factorised (positions, token types and LayerNorm at the model's width).
    config = tiny_config(["mha:3x8", "ffn:64", "mha:1x8", "id"], embedding_size=8, embedding_factorization="word")
    model = NasBertForSequenceClassification(config).eval()
    assert model.nasbert.embeddings.position_embeddings.weight.shape[1] == 32
    export_model(model, tmp_path / "model.onnx", "sequence-classification")
    assert_matches_eager(model, load_session(tmp_path / "model.onnx"), "sequence-classification", 3, 21)
