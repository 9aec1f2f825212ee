"""Pushing to and loading from a Hub over real HTTP, through the project's test server (tests/hub_server.py).

Fresh processes get `HF_ENDPOINT` pointing at the server and `HF_HOME` in a temporary folder.
"""

import json
import os
import re
import subprocess
import sys
import time

import huggingface_hub.constants
import pytest
import torch
from conftest import make_model_dir, random_inputs
from huggingface_hub import HfApi, ModelCard, get_session, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from hub_server import HubServer
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from nasbert_hf import NasBertForMaskedLM, hub
from nasbert_hf.cli import main
from nasbert_hf.model_card import build_model_card
from nasbert_hf.modeling.configuration_nasbert import AUTO_MAP

TOKEN = "hf_test_write_token"  # a user of the test server ("alice", member of "nasbert-org")
ORG = "nasbert-org"
SCORES = {"SST-2": 0.81, "CoLA": 0.12, "SQuAD": {"exact_match": 41.0, "f1": 55.5}}
EXPECTED_FILES = {
    ".gitattributes", "README.md", "config.json", "configuration_nasbert.py", "modeling_nasbert.py",
    "model.safetensors", "nasbert.json", "tokenizer.json", "tokenizer_config.json",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub")) as running:
        yield running


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("export") / "nasbert-tiny", scores=SCORES)


@pytest.fixture
def api(server):
    return HfApi(endpoint=server.url, token=TOKEN)


def child_env(server, tmp_path, **extra):
    env = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"), HF_TOKEN=TOKEN,
               NASBERT_HOME=str(tmp_path / "empty-zoo"), HF_HUB_DISABLE_PROGRESS_BARS="1", OMP_NUM_THREADS="1")
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NASBERT_HUB_ORG"):
        env.pop(key, None)
    return env | extra


def run_child(code, env, *args):
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_model_card_metadata(model_dir):
    card = ModelCard(build_model_card(model_dir, repo_id=f"{ORG}/nasbert-tiny"))
    data = card.data
    assert (data.library_name, data.base_model, data.pipeline_tag) == (
        "transformers", "sentence-transformers/all-MiniLM-L6-v2", "fill-mask")
    assert {"nasbert", "custom_code"} <= set(data.tags) and data.datasets == ["wikimedia/wikipedia"]
    results = {(r.dataset_config, r.metric_type): r.metric_value for r in data.eval_results}
    assert results == {("sst2", "accuracy"): 0.81, ("cola", "matthews_correlation"): 0.12,
                       ("plain_text", "exact_match"): 41.0, ("plain_text", "f1"): 55.5}
    assert f'from_pretrained("{ORG}/nasbert-tiny"' in card.text
    metadata = json.loads((model_dir / "nasbert.json").read_text())
    assert metadata["architecture"] in card.text
    without_scores = ModelCard(build_model_card({**metadata, "scores": None, "teacher": "/no/such/teacher"}))
    assert without_scores.data.eval_results is None and without_scores.data.base_model is None
    with pytest.raises(ValueError, match="Unknown task 'GLUE-X'.*cola"):
        build_model_card({**metadata, "scores": {"GLUE-X": 1.0}})


def test_push_then_load_in_fresh_processes(server, api, model_dir, tmp_path):
    info = hub.push(model_dir, f"{ORG}/nasbert-tiny", token=TOKEN, endpoint=server.url)
    assert info.oid == api.model_info(f"{ORG}/nasbert-tiny").sha
    assert set(api.list_repo_files(f"{ORG}/nasbert-tiny")) == EXPECTED_FILES
    model_info = api.model_info(f"{ORG}/nasbert-tiny")
    assert model_info.card_data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    weights = hf_hub_download(f"{ORG}/nasbert-tiny", "model.safetensors", endpoint=server.url, cache_dir=tmp_path / "c")
    assert open(weights, "rb").read() == (model_dir / "model.safetensors").read_bytes()
    config = json.loads(open(hf_hub_download(f"{ORG}/nasbert-tiny", "config.json", endpoint=server.url,
                                             cache_dir=tmp_path / "c")).read())
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_nasbert.NasBertForMaskedLM"

    input_ids, attention_mask = random_inputs(30522)
    save_file({"input_ids": input_ids, "attention_mask": attention_mask}, tmp_path / "inputs.safetensors")

    # 1. With nasbert_hf: the repo id, the bare name through NASBERT_HUB_ORG, then transformers' push_to_hub.
    report = run_child(WITH_PACKAGE, child_env(server, tmp_path, NASBERT_HUB_ORG=ORG),
                       tmp_path / "inputs.safetensors", tmp_path, model_dir)
    outputs = load_file(tmp_path / "with_package.safetensors")
    assert torch.equal(outputs["hub"], outputs["local"]) and torch.equal(outputs["bare_name"], outputs["local"])
    assert report["same_weights"] and report["offline_equal"]
    assert report["classes"] == ["NasBertForMaskedLM", "NasBertModel"]
    assert report["token_ids"] == report["local_token_ids"]
    assert report["missing"][0] == "ModelNotFoundError" and f"'{ORG}/nasbert-missing'" in report["missing"][1]
    assert "no such repository" in report["missing"][1]
    # A full repo id is not translated: transformers' own error.
    assert report["missing_full_id"][0] != "ModelNotFoundError" and "nasbert-missing" in report["missing_full_id"][1]
    assert report["pipeline_equal"]
    assert {"config.json", "model.safetensors", "modeling_nasbert.py"} <= set(api.list_repo_files(f"{ORG}/pushed"))

    # 2. Without nasbert_hf (it cannot even be imported): trust_remote_code loads the pushed code.
    report = run_child(WITHOUT_PACKAGE, child_env(server, tmp_path, HF_HOME=str(tmp_path / "hf2")),
                       tmp_path / "inputs.safetensors", tmp_path, model_dir)
    outputs = load_file(tmp_path / "without_package.safetensors")
    assert report["import_blocked"] and report["module"].startswith("transformers_modules.")
    assert torch.equal(outputs["hub"], outputs["local"]) and torch.equal(outputs["pushed"], outputs["local"])
    assert report["token_ids"] == report["local_token_ids"]
    # Every request of the clients hit a route the server implements, and none failed inside it.
    assert server.unknown_routes == [] and server.server_errors == []


WITH_PACKAGE = """
import json, sys
import torch
from safetensors.torch import load_file, save_file
import nasbert_hf, nasbert_hf.zoo
nasbert_hf.zoo.install_name_resolution()  # what `import nasbert_hf` does once the package installs the hook
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

inputs, out, local = load_file(sys.argv[1]), sys.argv[2], sys.argv[3]
def logits(model):
    with torch.no_grad():
        return model(**inputs).logits
hub = AutoModelForMaskedLM.from_pretrained("nasbert-org/nasbert-tiny")
bare = AutoModelForMaskedLM.from_pretrained("nasbert-tiny")  # NASBERT_HUB_ORG=nasbert-org
local_model = AutoModelForMaskedLM.from_pretrained(local)
outputs = {"hub": logits(hub), "bare_name": logits(bare), "local": logits(local_model)}
save_file(outputs, out + "/with_package.safetensors")
local_weights = local_model.state_dict()
report = {
    "same_weights": all(torch.equal(value, local_weights[key]) for key, value in hub.state_dict().items()),
    "classes": [type(hub).__name__, type(AutoModel.from_pretrained("nasbert-tiny")).__name__],
    "token_ids": AutoTokenizer.from_pretrained("nasbert-tiny")("pushed over http")["input_ids"],
    "local_token_ids": AutoTokenizer.from_pretrained(local)("pushed over http")["input_ids"],
}
for key, name in [("missing", "nasbert-missing"), ("missing_full_id", "nasbert-org/nasbert-missing")]:
    try:
        AutoModel.from_pretrained(name)
    except OSError as error:
        report[key] = [type(error).__name__, str(error)]
from transformers import pipeline
features = torch.tensor(pipeline("feature-extraction", model="nasbert-tiny")("pushed over http"))
with torch.no_grad():
    expected = AutoModel.from_pretrained(local)(**AutoTokenizer.from_pretrained(local)("pushed over http",
                                                                                     return_tensors="pt"))
report["pipeline_equal"] = torch.allclose(features, expected.last_hidden_state, atol=1e-6)
import huggingface_hub.constants
huggingface_hub.constants.HF_HUB_OFFLINE = True  # what HF_HUB_OFFLINE=1 sets: the cache is enough now
report["offline_equal"] = torch.equal(logits(AutoModelForMaskedLM.from_pretrained("nasbert-tiny")), logits(local_model))
huggingface_hub.constants.HF_HUB_OFFLINE = False
hub.push_to_hub("nasbert-org/pushed")  # transformers' own push, token from HF_TOKEN
print(json.dumps(report))
"""

WITHOUT_PACKAGE = """
import json, sys
sys.modules["nasbert_hf"] = None  # this process must not be able to import the package
try:
    import nasbert_hf
    blocked = False
except ImportError:
    blocked = True
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

inputs, out, local = load_file(sys.argv[1]), sys.argv[2], sys.argv[3]
def logits(model):
    with torch.no_grad():
        return model(**inputs).logits
hub = AutoModelForMaskedLM.from_pretrained("nasbert-org/nasbert-tiny", trust_remote_code=True)
pushed = AutoModelForMaskedLM.from_pretrained("nasbert-org/pushed", trust_remote_code=True)
local_model = AutoModelForMaskedLM.from_pretrained(local, trust_remote_code=True)
outputs = {"hub": logits(hub), "pushed": logits(pushed), "local": logits(local_model)}
save_file(outputs, out + "/without_package.safetensors")
tokenizer = AutoTokenizer.from_pretrained("nasbert-org/nasbert-tiny", trust_remote_code=True)
print(json.dumps({
    "import_blocked": blocked and "nasbert_hf" not in str(type(hub).__module__),
    "module": type(hub).__module__,
    "token_ids": tokenizer("pushed over http")["input_ids"],
    "local_token_ids": AutoTokenizer.from_pretrained(local, trust_remote_code=True)("pushed over http")["input_ids"],
}))
"""


def test_wrong_token_and_missing_repo_give_the_usual_errors(server, api, model_dir, tmp_path):
    with pytest.raises(HfHubHTTPError) as caught:
        hub.push(model_dir, f"{ORG}/nasbert-tiny", token="hf_not_a_valid_token", endpoint=server.url)
    assert caught.value.response.status_code == 401 and not isinstance(caught.value, RepositoryNotFoundError)
    assert "hf_not_a_valid_token" not in str(caught.value)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(f"{ORG}/never-pushed")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{ORG}/never-pushed", "config.json", endpoint=server.url, cache_dir=tmp_path)
    with pytest.raises(HfHubHTTPError) as caught:
        hub.push(model_dir, "someone-else/nasbert-tiny", token=TOKEN, endpoint=server.url)
    assert caught.value.response.status_code == 403


def test_private_repo_needs_a_token(server, api, model_dir, tmp_path):
    hub.push(model_dir, f"{ORG}/private-tiny", private=True, token=TOKEN, endpoint=server.url)
    assert api.model_info(f"{ORG}/private-tiny").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=server.url, token=False).model_info(f"{ORG}/private-tiny")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{ORG}/private-tiny", "config.json", endpoint=server.url, cache_dir=tmp_path, token=False)


def test_cli_push_never_shows_the_token(server, api, model_dir, monkeypatch, capsys, caplog):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level("DEBUG")
    assert main(["push", str(model_dir), "--repo", f"{ORG}/cli-tiny", "--private"]) == 0
    out = capsys.readouterr()
    assert f"{ORG}/cli-tiny" in out.out and api.model_info(f"{ORG}/cli-tiny").private
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_secret_value")
    assert main(["push", str(model_dir), "--repo", f"{ORG}/cli-tiny"]) == 2
    failed = capsys.readouterr()
    assert "401" in failed.err
    for text in (out.out, out.err, failed.out, failed.err, caplog.text):
        assert TOKEN not in text and "hf_wrong_secret_value" not in text
    monkeypatch.delenv("NASBERT_HUB_ORG", raising=False)
    assert main(["push", str(model_dir)]) == 2
    assert "NASBERT_HUB_ORG" in capsys.readouterr().err


def test_push_to_an_endpoint_that_never_answers_times_out(server, model_dir, monkeypatch, capsys):
    before = {path.name: path.read_bytes() for path in model_dir.iterdir() if path.is_file()}
    started = time.monotonic()
    with server.hanging(at_most=30):
        with pytest.raises(ConnectionError, match=re.escape(server.url) + r".*did not answer within 0.5 s"):
            hub.push(model_dir, f"{ORG}/hanging", token=TOKEN, endpoint=server.url, timeout=0.5)
        # The command line takes the bound from NASBERT_HUB_TIMEOUT and fails with that message.
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("NASBERT_HUB_TIMEOUT", "0.5")
        assert main(["push", str(model_dir), "--repo", f"{ORG}/hanging"]) == 2
    assert "did not answer within 0.5 s" in capsys.readouterr().err
    assert time.monotonic() - started < 20
    assert {path.name: path.read_bytes() for path in model_dir.iterdir() if path.is_file()} == before
    assert get_session().timeout.read is None  # the bound is lifted after the push
    monkeypatch.setenv("NASBERT_HUB_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="NASBERT_HUB_TIMEOUT"):
        hub.push(model_dir, f"{ORG}/hanging", token=TOKEN, endpoint=server.url)


def test_push_of_a_plain_bert_folder_is_a_clear_error(tmp_path, capsys):
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=16))
    bert.save_pretrained(tmp_path / "bert")
    assert main(["push", str(tmp_path / "bert"), "--repo", f"{ORG}/bert"]) == 2
    assert "model_type 'bert'" in capsys.readouterr().err


def test_push_completes_what_trust_remote_code_needs(server, api, model_dir, tmp_path):
    """A folder saved without the modeling code or `auto_map` still goes up loadable; pickles stay home."""
    bare = tmp_path / "bare-nasbert"
    bare.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (bare / name).write_bytes((model_dir / name).read_bytes())
    config = json.loads((model_dir / "config.json").read_text())
    del config["auto_map"]
    (bare / "config.json").write_text(json.dumps(config))
    (bare / "training_args.bin").write_bytes(b"a pickle")
    hub.push(bare, f"{ORG}/bare", token=TOKEN, endpoint=server.url)
    files = set(api.list_repo_files(f"{ORG}/bare"))
    assert {"configuration_nasbert.py", "modeling_nasbert.py", "README.md"} <= files
    assert "training_args.bin" not in files
    pushed_config = json.loads(open(hf_hub_download(f"{ORG}/bare", "config.json", endpoint=server.url,
                                                    cache_dir=tmp_path / "c")).read())
    assert pushed_config["auto_map"] == AUTO_MAP and pushed_config["layers"] == config["layers"]


def test_push_a_model_object_with_its_tokenizer(server, api, model_dir):
    model = NasBertForMaskedLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with pytest.raises(ValueError, match="repo_id"):
        hub.push(model, token=TOKEN, endpoint=server.url)
    hub.push(model, f"{ORG}/from-object", tokenizer=tokenizer, token=TOKEN, endpoint=server.url)
    assert EXPECTED_FILES == set(api.list_repo_files(f"{ORG}/from-object"))
    assert api.model_info(f"{ORG}/from-object").card_data["library_name"] == "transformers"


def repo_state(api, repo_id, tmp_path):
    """(head sha, files, bytes of model.safetensors) as a fresh client sees them."""
    info = api.model_info(repo_id)
    weights = hf_hub_download(repo_id, "model.safetensors", revision=info.sha, endpoint=api.endpoint,
                              cache_dir=tmp_path / "state", token=TOKEN)
    return info.sha, set(api.list_repo_files(repo_id, revision=info.sha)), open(weights, "rb").read()


def test_interrupted_push_leaves_no_half_written_revision(server, api, model_dir, tmp_path):
    repo_id = f"{ORG}/atomic"
    (model_dir.parent / "v1").mkdir()
    v1 = make_model_dir(model_dir.parent / "v1" / "nasbert-tiny", seed=1)
    (v1 / "notes.txt").write_text("only in v1")
    # v2's commit body (~21 MB) is larger than what the sockets buffer, so a kill cuts it mid-transfer.
    v2 = make_model_dir(model_dir.parent / "v2-nasbert-tiny", seed=2, embedding_size=128)
    hub.push(v1, repo_id, token=TOKEN, endpoint=server.url)
    before = repo_state(api, repo_id, tmp_path)
    assert "notes.txt" in before[1] and before[2] == (v1 / "model.safetensors").read_bytes()

    # The connection dies after 100 kB of the commit: the client gets an error
    # and the repo still shows v1, whole.
    server.interrupt_next_commit(after_bytes=100_000)
    with pytest.raises(ConnectionError, match="all or nothing"):
        hub.push(v2, repo_id, token=TOKEN, endpoint=server.url)
    assert server.incomplete_commits == 1
    assert repo_state(api, repo_id, tmp_path) == before

    # The pushing process is killed in the middle of the commit upload: v1 or v2, never a mixture.
    reached, release, done = server.hold_next_commit(after_bytes=100_000)
    child = subprocess.Popen([sys.executable, "-m", "nasbert_hf.cli", "push", str(v2), "--repo", repo_id],
                             env=child_env(server, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert reached.wait(timeout=120), "the push never reached the commit"
    finally:
        child.kill()
        child.wait()
        release.set()
    assert done.wait(timeout=60)
    sha, files, weights = repo_state(api, repo_id, tmp_path)
    assert (files, weights) in [(before[1], before[2]), (EXPECTED_FILES, (v2 / "model.safetensors").read_bytes())]
    assert (sha == before[0]) == (files == before[1])

    # A push run to the end replaces v1 by v2 in one commit, deleting what v2 does not have.
    hub.push(v2, repo_id, token=TOKEN, endpoint=server.url)
    sha, files, weights = repo_state(api, repo_id, tmp_path)
    assert files == EXPECTED_FILES and weights == (v2 / "model.safetensors").read_bytes()
    assert server.incomplete_commits in (1, 2)


ZOO_AND_HUB = """
import json, sys
import torch
from safetensors.torch import load_file, save_file
import nasbert_hf
from transformers import AutoModelForMaskedLM

inputs, out = load_file(sys.argv[1]), sys.argv[2]
def logits(name):
    with torch.no_grad():
        return AutoModelForMaskedLM.from_pretrained(name)(**inputs).logits
save_file({"bare": logits("nasbert-tiny"), "full_id": logits("nasbert-org/nasbert-tiny")}, out)
print(json.dumps({}))
"""


def test_a_name_in_the_zoo_and_on_the_hub(server, model_dir, tmp_path):
    """The zoo comes before `$NASBERT_HUB_ORG/<name>`; the full repo id still reaches the Hub."""
    from nasbert_hf import zoo

    hub.push(model_dir, f"{ORG}/nasbert-tiny", token=TOKEN, endpoint=server.url)
    installed = make_model_dir(tmp_path / "other" / "nasbert-tiny", seed=5)
    zoo.install(installed, home=tmp_path / "zoo")
    input_ids, attention_mask = random_inputs(30522)
    save_file({"input_ids": input_ids, "attention_mask": attention_mask}, tmp_path / "inputs.safetensors")
    env = child_env(server, tmp_path, NASBERT_HUB_ORG=ORG, NASBERT_HOME=str(tmp_path / "zoo"))
    run_child(ZOO_AND_HUB, env, tmp_path / "inputs.safetensors", tmp_path / "out.safetensors")
    outputs = load_file(tmp_path / "out.safetensors")
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    with torch.no_grad():
        expected = {name: NasBertForMaskedLM.from_pretrained(folder).eval()(**inputs).logits
                    for name, folder in [("zoo", installed), ("hub", model_dir)]}
    assert torch.equal(outputs["bare"], expected["zoo"]) and torch.equal(outputs["full_id"], expected["hub"])
    assert not torch.equal(expected["zoo"], expected["hub"])
    assert server.unknown_routes == [] and server.server_errors == []
