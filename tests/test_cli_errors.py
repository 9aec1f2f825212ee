"""Bad input on the command line: one clear line on stderr (exit code 2), no traceback, and no
run folder left behind that a corrected re-run would trip over."""

import pickle
import re

import pytest
from conftest import OFFICIAL_ROWS, SPACE_YAML, make_model_dir, save_random_teacher, write_task
from transformers import (
    DistilBertConfig,
    DistilBertModel,
    GPT2Config,
    GPT2Model,
    RobertaConfig,
    RobertaModel,
)

from nasbert_hf import NasBertConfig, NasBertModel
from nasbert_hf.cli import main
from nasbert_hf.training import check_max_length


def error_line(capsys, command):
    """The error line of a failed `nasbert COMMAND` (progress bars of the set-up aside)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("nasbert ")]
    assert len(lines) == 1 and lines[0].startswith(f"nasbert {command}: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def malformed_yaml(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("search_space:\n  hidden_sizes: [16, 24\n  ops: [id]\n")
    return path


@pytest.mark.parametrize("command", ["supernet", "compress", "latency-table"])
def test_a_malformed_yaml_config_names_the_file(tmp_path, capsys, malformed_yaml, command):
    out = tmp_path / "out"
    assert main([command, "--config", str(malformed_yaml), "--out", str(out)]) == 2
    message = f"{malformed_yaml}: invalid YAML at line 3, column 6: expected ',' or ']', but got ':'."
    assert message in error_line(capsys, command)
    assert not out.exists()


def tiny_nasbert(folder):
    config = NasBertConfig(layers=["mha:2", "ffn:32"], hidden_size=16, vocab_size=100, max_position_embeddings=32)
    NasBertModel(config).save_pretrained(folder)
    return folder


def test_corrupt_weights_name_the_file(tmp_path, capsys):
    model_dir = tiny_nasbert(tmp_path / "model")
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["export-onnx", str(model_dir), "--out", str(tmp_path / "onnx")]) == 2
    assert f"{weights} is not a readable safetensors file" in error_line(capsys, "export-onnx")
    assert main(["distill", str(model_dir), "--out", str(tmp_path / "distilled")]) == 2
    assert re.search(f"{re.escape(str(weights))} is (not a readable safetensors file|truncated)",
                     error_line(capsys, "distill"))


@pytest.mark.parametrize(
    "model_type, build",
    [
        ("gpt2", lambda: GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=100, n_positions=32))),
        ("roberta", lambda: RobertaModel(RobertaConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                                       intermediate_size=32, vocab_size=100))),
        ("distilbert", lambda: DistilBertModel(DistilBertConfig(n_layers=1, dim=16, n_heads=2, hidden_dim=32,
                                                                vocab_size=100))),
        ("nasbert", None),
    ],
)
def test_convert_names_the_supported_architectures(tmp_path, capsys, model_type, build):
    folder = tmp_path / model_type
    if build is None:
        tiny_nasbert(folder)
    else:
        build().save_pretrained(folder)
    assert main(["convert", str(folder), "--out", str(tmp_path / "out")]) == 2
    line = error_line(capsys, "convert")
    assert f"holds a '{model_type}' model" in line and "takes BERT checkpoints (model_type 'bert'): BertForMaskedLM" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--learning-rate", "-1"], "learning_rate=-1.0 must be a positive number"),
        (["--lr-scheduler-type", "foo"], "lr_scheduler_type='foo' is not a scheduler"),
        (["--keep-checkpoints", "0"], "keep_checkpoints=0 must be at least 1"),
        (["--max-grad-norm", "-1"], "max_grad_norm=-1.0 must be non-negative"),
    ],
)
@pytest.mark.parametrize("command", ["supernet", "distill"])
def test_bad_training_arguments_fail_before_anything_is_written(tmp_path, capsys, command, flags, message):
    # A run folder left by a failed start needed --resume, which then refused the corrected value.
    out = tmp_path / "out"
    target = ["--out", str(out)] if command == "supernet" else [str(tiny_nasbert(tmp_path / "model")), "--out", str(out)]
    assert main([command, *target, *flags]) == 2
    assert message in error_line(capsys, command)
    assert not out.exists() and not (tmp_path / "distill-runs").exists()


def test_seq_len_beyond_the_teachers_positions_is_refused(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    teacher = save_random_teacher(tmp_path / "teacher")  # max_position_embeddings=128
    out = tmp_path / "run"
    code = main(["supernet", "--config", str(tmp_path / "space.yaml"), "--teacher", str(teacher), "--out", str(out),
                 "--seq-len", "256", "--cpu"])
    assert code == 2
    assert "seq_len=256 exceeds teacher" in error_line(capsys, "supernet")
    assert not (out / "run_config.json").exists()


def test_check_max_length_names_the_flag_and_the_limit():
    config = NasBertConfig(layers=["id"], hidden_size=16, max_position_embeddings=64)
    check_max_length(64, config, "--max-seq-length")
    with pytest.raises(ValueError, match="--max-seq-length=65 exceeds the model's max_position_embeddings=64"):
        check_max_length(65, config, "--max-seq-length")


@pytest.fixture
def pickle_only(tmp_path):
    """A BERT folder whose weights are a pickle only (`pytorch_model.bin`), which must never be loaded."""
    folder = save_random_teacher(tmp_path / "pickled", layers=2)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"never": "loaded"}))
    return folder


@pytest.mark.parametrize("command", ["glue", "glue --resume_from_checkpoint", "convert", "supernet", "distill"])
def test_pickle_only_weights_are_refused_by_name(tmp_path, capsys, pickle_only, command):
    train = OFFICIAL_ROWS["sst2"]["train.tsv"]
    write_task(tmp_path / "glue", "sst2", {"train.tsv": train, "dev.tsv": train})
    glue = ["--task", "sst2", "--data_dir", str(tmp_path / "glue"), "--output_dir", str(tmp_path / "ft")]
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    args = {
        "glue": [str(pickle_only), *glue],
        "glue --resume_from_checkpoint": [str(save_random_teacher(tmp_path / "bert", layers=2)), *glue,
                                          "--max_steps", "1", "--resume_from_checkpoint", str(pickle_only)],
        "convert": [str(pickle_only), "--out", str(tmp_path / "out")],
        "supernet": ["--config", str(tmp_path / "space.yaml"), "--teacher", str(pickle_only),
                     "--out", str(tmp_path / "out"), "--cpu"],
        "distill": [str(make_model_dir(tmp_path / "model")), "--teacher", str(pickle_only),
                    "--out", str(tmp_path / "out")],
    }[command]
    name = command.split()[0]
    assert main([name, *args]) == 2
    line = error_line(capsys, name)
    message = f"{pickle_only}: this folder holds only pickle weights (pytorch_model.bin); convert it to safetensors"
    assert message in line


# -- where a command writes its model ------------------------------------------------------------

# The command lines of the four commands that save a model into an output folder.
WRITERS = {
    "glue": lambda model, out, data: ["glue", model, "--task", "sst2", "--data-dir", data, "--output-dir", out],
    "squad": lambda model, out, data: ["squad", model, "--data-dir", data, "--output-dir", out],
    "distill": lambda model, out, data: ["distill", model, "--out", out, "--max-steps", "1"],
    "convert": lambda model, out, data: ["convert", model, "--out", out],
}


def files_of(folder):
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


@pytest.mark.parametrize("target", ["zoo entry", "new zoo folder", "other model"])
@pytest.mark.parametrize("command", WRITERS)
def test_an_output_folder_in_the_zoo_or_holding_a_model_is_refused(tmp_path, capsys, monkeypatch, command, target):
    from nasbert_hf import zoo

    monkeypatch.setenv("NASBERT_HOME", str(tmp_path / "zoo"))
    model = make_model_dir(tmp_path / "model")
    other = make_model_dir(tmp_path / "other" / "nasbert-other", name="nasbert-other", seed=1)
    out = {"zoo entry": lambda: zoo.install(other), "new zoo folder": lambda: tmp_path / "zoo" / "sst2",
           "other model": lambda: other}[target]()
    before = files_of(other)
    assert main(WRITERS[command](str(model), str(out), str(tmp_path))) == 2
    line = error_line(capsys, command)
    if target == "other model":
        assert f"{out} already holds a model (config.json, model.safetensors), which `nasbert {command}` would " \
               "replace" in line
    else:
        assert f"{out} lies inside the model zoo {tmp_path / 'zoo'}" in line
    assert files_of(other) == before and not (tmp_path / "zoo" / "sst2").exists()
    assert target != "zoo entry" or files_of(out) == before  # the installed model is untouched


def test_an_unfinished_run_of_the_same_command_may_be_resumed(tmp_path):
    from nasbert_hf.paths import check_output_folder, trainer_run_of

    out = make_model_dir(tmp_path / "out")  # a root model, as Trainer leaves it once it has saved
    checkpoint = out / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    (checkpoint / "config.json").write_text('{"architectures": ["NasBertForSequenceClassification"]}')
    check_output_folder(out, "glue", resumable=trainer_run_of("ForSequenceClassification"))
    with pytest.raises(FileExistsError, match="`nasbert squad` would replace"):  # not a run of that command
        check_output_folder(out, "squad", resumable=trainer_run_of("ForQuestionAnswering"))
    check_output_folder(out, "distill", updates=tmp_path / "out")  # distilling a model in place
    with pytest.raises(FileExistsError, match="`nasbert distill` would replace"):
        check_output_folder(out, "distill", updates=make_model_dir(tmp_path / "model"))


@pytest.mark.parametrize("command", ["glue", "squad", "convert"])
def test_a_missing_model_folder_is_named(tmp_path, capsys, command):
    missing = tmp_path / "qa" / "nomodel"
    assert main(WRITERS[command](str(missing), str(tmp_path / "out"), str(tmp_path))) == 2
    assert f"folder {missing} does not exist (and it is not a Hub repository id" in error_line(capsys, command)
