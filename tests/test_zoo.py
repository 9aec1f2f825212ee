"""The local model zoo and loading models by name (`from_pretrained("nasbert-tiny")`)."""

import filecmp
import json
import os
import shutil
import socket
import subprocess
import sys

import huggingface_hub.constants
import pytest
import torch
from conftest import MODEL_DIR_LAYERS, make_model_dir, random_inputs
import transformers
import transformers.pipelines
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer, BertConfig

import nasbert_hf
from nasbert_hf import NasBertConfig, NasBertForMaskedLM, NasBertModel, export, zoo
from nasbert_hf.cli import main

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
    # The entry is a link to the one version in the store; no temporary folder or link is left behind.
    assert sorted(p.name for p in home.iterdir()) == [".store", "nasbert-tiny"]
    (version,) = (home / ".store").iterdir()
    assert path.is_symlink() and path.resolve() == version and version.name.startswith("nasbert-tiny-")

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
    assert sorted(p.name for p in home.iterdir()) == [".store", "nasbert-tiny"]
    # v1 stays for a while: a load that resolved the name before the replace may still read it.
    assert len(list((home / ".store").iterdir())) == 2


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
    assert AutoConfig.from_pretrained("nasbert-tiny").layers == MODEL_DIR_LAYERS
    assert NasBertConfig.from_pretrained(pretrained_model_name_or_path="nasbert-tiny").layers == MODEL_DIR_LAYERS
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
    # The current version's folder: everything one load reads comes from the same install.
    assert (in_zoo.source, in_zoo.location) == ("zoo", os.path.realpath(home / "nasbert-tiny"))
    assert (zoo.resolve("nasbert-5M").source, zoo.resolve("nasbert-5M").location) == ("hub", "nasbert-5M")
    monkeypatch.setenv("NASBERT_HUB_ORG", "my-org")
    assert zoo.resolve("nasbert-tiny").source == "zoo"  # the zoo still comes before the Hub
    assert zoo.resolve("nasbert-5M").location == "my-org/nasbert-5M"
    # Names the project does not own are transformers' business, org or not.
    for name in ("other-org/nasbert-5M", "bert-base-uncased", "./missing/folder"):
        resolution = zoo.resolve(name)
        assert (resolution.source, resolution.location, resolution.owned) == ("other", name, False)


def test_not_found_anywhere_lists_where_it_looked(home, monkeypatch):
    monkeypatch.setenv("NASBERT_HUB_ORG", "my-org")
    with pytest.raises(OSError) as caught:
        AutoModel.from_pretrained("nasbert-404")
    error = caught.value
    assert isinstance(error, zoo.ModelNotFoundError)
    message = str(error)
    assert "nasbert-404" in message and str(home / "nasbert-404") in message
    assert "'my-org/nasbert-404'" in message and "offline" in message
    # Not one of the project's names: transformers' own error.
    with pytest.raises(OSError) as caught:
        AutoTokenizer.from_pretrained("./missing/tokenizer")
    assert not isinstance(caught.value, zoo.ModelNotFoundError)


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
        assert not hasattr(transformers.pipeline, "__nasbert_resolving__")
        assert transformers.pipeline is transformers.pipelines.pipeline
        with pytest.raises(OSError) as caught:
            AutoConfig.from_pretrained("nasbert-tiny")
        assert not isinstance(caught.value, zoo.ModelNotFoundError)
    finally:
        zoo.install_name_resolution()


def test_remove(home, model_dir):
    zoo.install(model_dir)
    zoo.remove("nasbert-tiny")
    assert zoo.list_models() == [] and list((home / ".store").iterdir()) == []  # the version is gone too
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


# -- names the project does not own pass through untouched ----------------------------------


def test_other_names_reach_transformers_unchanged(home, model_dir, monkeypatch):
    zoo.install(model_dir)
    monkeypatch.setenv("NASBERT_HUB_ORG", "my-org")
    calls = []

    def spy(cls, *args, **kwargs):
        calls.append((cls, args, kwargs))

    from_pretrained = zoo._resolving(spy)
    revision, options = "main", {"num_labels": 2}
    for name in ["bert-base-uncased", "google-bert/bert-base-uncased", "./some/folder", home.parent / "nowhere",
                 {"not": "a name"}, None]:
        calls.clear()
        from_pretrained(AutoConfig, name, revision, **options)
        ((cls, args, kwargs),) = calls
        assert cls is AutoConfig and args[0] is name and args[1] is revision and kwargs == options
        calls.clear()
        from_pretrained(AutoConfig, pretrained_model_name_or_path=name)
        assert calls[0][2]["pretrained_model_name_or_path"] is name
    from_pretrained(AutoConfig, "nasbert-tiny")  # ours: the zoo version's folder
    assert calls[-1][1] == (os.path.realpath(home / "nasbert-tiny"),)

    # End to end: the same error, word for word, as transformers without the hook (no 'my-org/' lookup).
    original = AutoConfig.from_pretrained.__func__.__wrapped__
    errors = []
    for load in (AutoConfig.from_pretrained, lambda name: original(AutoConfig, name)):
        with pytest.raises(OSError) as caught:
            load("bert-base-uncased")
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1] and "my-org" not in errors[0][1]


def test_pipeline_wrapper_passes_other_names_through(home, model_dir, monkeypatch):
    zoo.install(model_dir)
    monkeypatch.setenv("NASBERT_HUB_ORG", "my-org")
    calls = []

    def spy(task=None, model=None, config=None, tokenizer=None, **kwargs):
        calls.append((task, model, config, tokenizer, kwargs))

    pipeline = zoo._resolving_pipeline(spy)
    bert = object()
    pipeline("fill-mask", "bert-base-uncased", tokenizer=bert, device="cpu")
    assert calls[-1][1] == "bert-base-uncased" and calls[-1][3] is bert and calls[-1][4] == {"device": "cpu"}
    pipeline("feature-extraction", model="nasbert-tiny", tokenizer="nasbert-tiny")
    folder = os.path.realpath(home / "nasbert-tiny")
    assert calls[-1][1:4] == (folder, None, folder)
    assert transformers.pipeline is transformers.pipelines.pipeline
    assert transformers.pipeline.__nasbert_resolving__


def test_local_folders_named_like_hub_ids_load_as_before(home, tmp_path, monkeypatch):
    monkeypatch.setenv("NASBERT_HUB_ORG", "my-org")
    monkeypatch.chdir(tmp_path)
    local = make_model_dir(tmp_path / "nasbert-org" / "nasbert-tiny", seed=4)
    loaded = AutoModelForMaskedLM.from_pretrained("nasbert-org/nasbert-tiny")
    assert torch.equal(logits(loaded), logits(NasBertForMaskedLM.from_pretrained(local)))
    BertConfig(hidden_size=48, num_attention_heads=4).save_pretrained(tmp_path / "bert-tiny")
    assert AutoConfig.from_pretrained("bert-tiny").hidden_size == 48


def test_pipeline_by_zoo_name(home, model_dir, monkeypatch):
    zoo.install(model_dir)
    asked = []
    revision = transformers.pipelines.resolve_revision
    monkeypatch.setattr(transformers.pipelines, "resolve_revision",
                        lambda name, *args, **kwargs: asked.append(name) or revision(name, *args, **kwargs))
    pipe = transformers.pipeline("feature-extraction", model="nasbert-tiny")
    # The pipeline itself got the zoo folder: it never asked the Hub about a repository named 'nasbert-tiny'.
    assert asked == [os.path.realpath(home / "nasbert-tiny")]
    features = torch.tensor(pipe("a small model"))[0]
    model = NasBertModel.from_pretrained(model_dir).eval()
    inputs = AutoTokenizer.from_pretrained(model_dir)("a small model", return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state[0]
    assert torch.allclose(features, expected, atol=1e-6)
    monkeypatch.setenv("NASBERT_HUB_ORG", "my-org")
    with pytest.raises(zoo.ModelNotFoundError, match="(?s)'my-org/nasbert-404'.*offline"):
        transformers.pipeline("feature-extraction", model="nasbert-404")


# -- a robust zoo: broken entries, truncated weights, permissions, atomic replace -------------


def test_a_broken_entry_is_flagged_and_the_others_listed(home, model_dir, tmp_path, capsys):
    zoo.install(model_dir)
    zoo.install(make_model_dir(tmp_path / "bad", name="nasbert-bad", seed=1))
    broken_file = home / "nasbert-bad" / "nasbert.json"
    broken_file.write_text('{"name": "nasbert-bad", ')
    good, bad = sorted(zoo.list_models(), key=lambda model: model.name != "nasbert-tiny")
    assert (good.name, good.problem, bad.name, bad.metadata) == ("nasbert-tiny", None, "nasbert-bad", {})
    assert bad.problem.startswith(f"{broken_file}: invalid JSON at line 1, column 25")

    assert main(["list"]) == 0
    out = capsys.readouterr()
    assert "| nasbert-tiny |" in out.out and "nasbert-bad" not in out.out
    assert "Broken zoo entry 'nasbert-bad'" in out.err and str(broken_file) in out.err
    assert main(["list", "--json"]) == 0
    records = {record["name"]: record for record in json.loads(capsys.readouterr().out)}
    assert "problem" not in records["nasbert-tiny"] and str(broken_file) in records["nasbert-bad"]["problem"]


def test_install_rejects_truncated_or_damaged_weights(home, model_dir):
    weights = model_dir / "model.safetensors"
    whole = weights.read_bytes()
    for damaged, problem in [(whole[:-100], "truncated"), (whole[:40], "truncated"), (whole[:5], "truncated"),
                             (whole + b"\0" * 10, "longer than its header says"),
                             (whole[:8] + b"x" * (len(whole) - 8), "not a readable safetensors file")]:
        weights.write_bytes(damaged)
        with pytest.raises(ValueError, match=problem) as caught:
            zoo.install(model_dir)
        assert str(weights) in str(caught.value)
    assert not home.exists()  # checked before anything is written to the zoo


def test_sharded_weights_are_checked_shard_by_shard(home, model_dir):
    weights = model_dir / "model.safetensors"
    weights.rename(model_dir / "model-00001-of-00001.safetensors")
    index = {"metadata": {}, "weight_map": {"cls.bias": "model-00001-of-00001.safetensors"}}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    zoo.check_model_dir(model_dir)
    shard = model_dir / "model-00001-of-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(ValueError, match=f"{shard}.*truncated"):
        zoo.install(model_dir)
    shard.unlink()
    with pytest.raises(ValueError, match="names the shard model-00001-of-00001.safetensors, which is missing"):
        zoo.install(model_dir)


def modes(folder):
    """{relative path: permission bits} of a folder and everything in it."""
    return {path.relative_to(folder).as_posix(): path.stat().st_mode & 0o777 for path in [folder, *folder.rglob("*")]}


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_installed_and_exported_folders_are_readable_by_everyone(home, model_dir, tmp_path, umask_022):
    # What tempfile makes: a 0700 folder of 0600 files.
    for path in [model_dir, *model_dir.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    entry = zoo.install(model_dir)
    installed = modes(entry.resolve())
    assert installed.pop(".") == 0o755 and set(installed.values()) == {0o644}
    assert modes(home)["."] == 0o755 and modes(home / ".store")["."] == 0o755

    model = NasBertForMaskedLM.from_pretrained(model_dir)
    metadata = export.model_metadata("nasbert-tiny", nasbert_hf.Architecture.from_config(model.config), model.config)
    out = export.save_model_folder(model, None, metadata, tmp_path / "exported" / "nasbert-tiny")
    exported = modes(out)
    assert exported.pop(".") == 0o755 and set(exported.values()) == {0o644}
    assert {"nasbert.json", "model.safetensors", "README.md"} <= set(exported)


def test_reinstalling_never_leaves_the_name_without_a_whole_model(home, model_dir, tmp_path, monkeypatch):
    """At every rename and deletion of a re-install, the name loads a complete model: the old one or the new."""
    zoo.install(model_dir)
    new = make_model_dir(tmp_path / "v2" / "nasbert-tiny", seed=7)
    versions = [logits(NasBertForMaskedLM.from_pretrained(folder)) for folder in (model_dir, new)]
    seen = []

    def loads_a_whole_model(step):
        loaded = logits(AutoModelForMaskedLM.from_pretrained("nasbert-tiny"))
        seen.append((step, [torch.equal(loaded, version) for version in versions].index(True)))

    def checking(function, step):
        def call(*args, **kwargs):
            loads_a_whole_model(f"before {step}")
            result = function(*args, **kwargs)
            loads_a_whole_model(f"after {step}")
            return result
        return call

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", checking(os.replace, "os.replace"))
        patch.setattr(zoo.shutil, "rmtree", checking(shutil.rmtree, "rmtree"))
        zoo.install(new, overwrite=True)
    assert seen and seen[0][1] == 0 and seen[-1][1] == 1  # from the old version to the new, never a gap


def test_plain_folder_entries_from_before_the_store_still_work(home, model_dir, tmp_path, monkeypatch):
    home.mkdir(parents=True)
    shutil.copytree(model_dir, home / "nasbert-tiny")  # what older versions installed
    (entry,) = zoo.list_models()
    assert (entry.name, entry.problem) == ("nasbert-tiny", None)
    expected = logits(NasBertForMaskedLM.from_pretrained(model_dir))
    assert torch.equal(logits(AutoModelForMaskedLM.from_pretrained("nasbert-tiny")), expected)

    # Re-installing turns it into a link in one step (renameat2 on Linux): never missing in between.
    new = make_model_dir(tmp_path / "v2" / "nasbert-tiny", seed=7)
    replace = os.replace
    states = []
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", lambda *args: states.append(
            (home / "nasbert-tiny" / "model.safetensors").is_file()) or replace(*args))
        zoo.install(new, overwrite=True)
    assert (home / "nasbert-tiny").is_symlink()
    assert all(states) or sys.platform != "linux"  # elsewhere: two renames, missing for an instant
    assert sorted(p.name for p in home.iterdir()) == [".store", "nasbert-tiny"]
    assert torch.equal(logits(AutoModelForMaskedLM.from_pretrained("nasbert-tiny")),
                       logits(NasBertForMaskedLM.from_pretrained(new)))

    shutil.copytree(model_dir, home / "nasbert-old")
    zoo.remove("nasbert-old")
    assert [model.name for model in zoo.list_models()] == ["nasbert-tiny"]


# -- concurrent installs, and loads during a re-install -----------------------------------------


def _racing_install(barrier, folder, outcomes):
    """Install `folder` in a child process, every process's copy finished before any goes on: the
    slow copy of a real model, where both installs once passed the "is the name free?" check."""
    copytree = shutil.copytree

    def copy_then_wait(*args, **kwargs):
        copied = copytree(*args, **kwargs)
        barrier.wait(timeout=60)
        return copied

    shutil.copytree = copy_then_wait
    try:
        zoo.install(folder)
        outcomes.put((str(folder), "installed"))
    except FileExistsError:
        outcomes.put((str(folder), "refused"))
    except BaseException as error:  # reported, so that the test never waits for an answer that is not coming
        outcomes.put((str(folder), repr(error)))


def test_concurrent_installs_of_one_name_install_it_once(home, tmp_path):
    import multiprocessing

    folders = [make_model_dir(tmp_path / f"v{seed}" / "nasbert-tiny", seed=seed) for seed in range(3)]
    context = multiprocessing.get_context("fork")  # the children inherit the test's zoo and patches
    barrier, outcomes = context.Barrier(len(folders)), context.SimpleQueue()
    processes = [context.Process(target=_racing_install, args=(barrier, folder, outcomes)) for folder in folders]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    results = dict(outcomes.get() for _ in processes)
    winners = [folder for folder, outcome in results.items() if outcome == "installed"]
    assert len(winners) == 1 and sorted(results.values()) == ["installed", "refused", "refused"], results
    installed = (home / "nasbert-tiny" / "model.safetensors").read_bytes()
    assert installed == (tmp_path / winners[0] / "model.safetensors").read_bytes()
    assert len(list((home / ".store").iterdir())) == 1  # the losers' copies are gone


def test_a_load_in_progress_survives_a_forced_reinstall(home, model_dir, tmp_path, capsys, monkeypatch):
    zoo.install(model_dir)
    reading = zoo.resolve("nasbert-tiny").location  # what a load started before the re-install reads
    zoo.install(make_model_dir(tmp_path / "v2" / "nasbert-tiny", seed=7), overwrite=True)
    loaded = NasBertForMaskedLM.from_pretrained(reading)  # used to be FileNotFoundError: deleted under it
    assert torch.equal(logits(loaded), logits(NasBertForMaskedLM.from_pretrained(model_dir)))

    assert main(["list"]) == 0 and os.path.isdir(reading)  # within the grace period it stays
    monkeypatch.setattr(zoo, "RETIRED_GRACE_SECONDS", 0)
    assert main(["list"]) == 0 and not os.path.exists(reading)  # then `nasbert list` deletes it
    assert [p.name for p in (home / ".store").iterdir()] == [(home / "nasbert-tiny").resolve().name]
    capsys.readouterr()


# -- broken zoos say what is wrong ---------------------------------------------------------------


def test_broken_entries_say_what_is_wrong(home, model_dir, capsys):
    zoo.install(model_dir)
    (home / "nasbert-empty").mkdir()
    os.symlink(".store/nasbert-gone-0123", home / "nasbert-gone")
    os.symlink(".store/mine-0123", home / "mine")  # not a `nasbert-*` name: still the zoo's business
    problems = {"nasbert-empty": "is an empty folder", "nasbert-gone": "is a link to .store/nasbert-gone-0123, "
                "which is missing", "mine": "is a link to .store/mine-0123, which is missing"}
    for name, problem in problems.items():
        with pytest.raises(zoo.ModelNotFoundError) as caught:
            AutoModelForMaskedLM.from_pretrained(name)
        assert f"{home / name} {problem}" in str(caught.value) and "not installed" not in str(caught.value)

    # A config.json that is no JSON makes the entry broken, even with a readable nasbert.json.
    config = home / "nasbert-tiny" / "config.json"
    config.write_text("{not json")
    listed = {model.name: model.problem for model in zoo.list_models()}
    assert str(config) in listed.pop("nasbert-tiny") and listed == {
        name: f"{home / name} {problem}; install the model again (`nasbert install DIR --name {name} --force`)."
        for name, problem in problems.items()}
    assert main(["list"]) == 0
    out = capsys.readouterr()
    assert "No models" not in out.out and "| nasbert-tiny |" not in out.out
    assert all(f"Broken zoo entry {name!r}" in out.err for name in [*problems, "nasbert-tiny"])


def test_a_zoo_home_that_is_a_file_is_named(home, model_dir, capsys):
    home.write_text("not a folder")
    with pytest.raises(zoo.ModelNotFoundError, match=f"the zoo folder {home} .* is a file, not a folder"):
        AutoModelForMaskedLM.from_pretrained("nasbert-tiny")
    for command in (["list"], ["install", str(model_dir)]):
        assert main(command) == 2
        assert f"the zoo folder {home} ($NASBERT_HOME or --home) is a file" in capsys.readouterr().err
