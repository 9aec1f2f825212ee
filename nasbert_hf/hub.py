"""Sharing models on the Hugging Face Hub: `push(model_dir, "org/nasbert-5M")` / `nasbert push`.

A push uploads everything `AutoModel.from_pretrained("org/nasbert-5M")` needs, with or without
this package installed: safetensors weights, the tokenizer, `config.json` with its `auto_map`,
the two modeling files for `trust_remote_code=True`, `nasbert.json`, and a model card
(`README.md`; built by `nasbert_hf.model_card` when the folder has none).

The whole folder goes up as ONE commit (`HfApi.create_commit`), which also deletes files of the
previous revision that the folder no longer has: a revision on the Hub is always exactly one
pushed folder, and a push interrupted midway leaves the previous revision in place.
(`upload_folder` would split large folders into several commits.)

Every Hub call of a push is bounded: huggingface_hub's shared HTTP client waits for ever by default
(only its metadata and download calls have their own `HF_HUB_ETAG_TIMEOUT` /
`HF_HUB_DOWNLOAD_TIMEOUT`), so during a push it waits at most `timeout` seconds (default
`$NASBERT_HUB_TIMEOUT`, else 60) to connect and between two bytes of an answer. An endpoint that
accepts the connection and never answers fails the push with a `ConnectionError` naming it.

The token comes from the `token` argument, else `HF_TOKEN`, else the one saved by
`hf auth login` (huggingface_hub's own look-up); it is never printed or logged.
`model.push_to_hub("org/name")` (transformers) also works for NasBert models: it uploads weights,
config and modeling code, and keeps the repo's model card if there is one.
"""

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_session

from .folders import CONFIG_FILE, MODEL_CARD_FILE, check_model_dir, read_json, write_metadata
from .model_card import build_model_card
from .zoo import hub_org, read_metadata, resolve

logger = logging.getLogger(__name__)

REMOTE_CODE = ("configuration_nasbert.py", "modeling_nasbert.py")
# Pickles are never shared: from_pretrained of this project loads safetensors only.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
TIMEOUT_ENV = "NASBERT_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 60.0  # seconds of silence; a commit of large files can keep the Hub busy for a while


def hub_timeout(timeout=None):
    """`timeout` seconds, else `$NASBERT_HUB_TIMEOUT`, else `DEFAULT_TIMEOUT`; a positive number."""
    value = timeout if timeout is not None else os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"Hub timeout {value!r} ({TIMEOUT_ENV} or timeout=) must be a positive number of seconds.")
    return seconds


@contextlib.contextmanager
def bounded_hub_calls(seconds):
    """Within the block, huggingface_hub's shared client waits at most `seconds` for a connection and
    between two bytes of an answer, unless it already has a bound of its own (a custom client factory
    or an earlier bound): its default is to wait for ever."""
    session = get_session()
    previous = session.timeout
    if previous.read is None:
        session.timeout = seconds
    try:
        yield
    finally:
        session.timeout = previous


def repo_id_for(name, repo_id=None):
    """The Hub repository for model `name`: `repo_id` when given, else `$NASBERT_HUB_ORG/<name>`."""
    if repo_id:
        return repo_id
    org = hub_org()
    if org is None:
        raise ValueError(
            f"No repository given for {name!r}: pass repo_id='org/name' (`--repo`) or set NASBERT_HUB_ORG."
        )
    return f"{org}/{name}"


def stage(model_dir, repo_id=None, license="apache-2.0"):
    """The commit operations that publish `model_dir`: its files (pickles and hidden files left out),
    plus a model card and the modeling code + `auto_map` when the folder lacks them."""
    model_dir = check_model_dir(model_dir)
    files = {}
    for path in sorted(model_dir.rglob("*")):
        relative = path.relative_to(model_dir)
        if not path.is_file() or any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        if path.suffix in PICKLE_SUFFIXES:
            logger.warning("Not uploading %s: pickled files are never shared; weights go as safetensors.", relative)
            continue
        files[relative.as_posix()] = path
    if MODEL_CARD_FILE not in files:
        files[MODEL_CARD_FILE] = build_model_card(model_dir, repo_id=repo_id, license=license).encode()
    _add_remote_code(model_dir, files)
    return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content) for name, content in files.items()]


def _add_remote_code(model_dir, files):
    """Make the upload loadable with `trust_remote_code=True` even if the folder was saved without the code."""
    from .modeling import configuration_nasbert

    package = Path(configuration_nasbert.__file__).parent
    for name in REMOTE_CODE:
        files.setdefault(name, package / name)
    config = read_json(model_dir / CONFIG_FILE)
    if config.get("auto_map") != configuration_nasbert.AUTO_MAP:
        config["auto_map"] = dict(configuration_nasbert.AUTO_MAP)
        files[CONFIG_FILE] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def push(
    model_or_dir,
    repo_id=None,
    *,
    tokenizer=None,
    private=None,
    token=None,
    revision=None,
    commit_message=None,
    license="apache-2.0",
    endpoint=None,
    timeout=None,
):
    """Upload a model to the Hub repository `repo_id` (created if needed) in one commit.

    Args:
        model_or_dir: a saved model folder, a zoo name (`"nasbert-5M"`), or a NasBert model
            object (saved to a temporary folder first, with `tokenizer` if given).
        repo_id: `"org/name"`; default `$NASBERT_HUB_ORG/<model name>`.
        private: create the repository private (an existing repository keeps its visibility).
        token: a Hub token with write access; default `HF_TOKEN` or the saved login. Never printed.
        revision: the branch to commit to (default `main`).
        license: the card's license when a card is built (the folder has no README.md).
        endpoint: the Hub URL (default `HF_ENDPOINT`, else https://huggingface.co).
        timeout: the most seconds any Hub call may wait for an answer (default `$NASBERT_HUB_TIMEOUT`,
            else 60); past it the push fails with a `ConnectionError` naming the endpoint.

    Returns the `huggingface_hub.CommitInfo` of the commit (`.commit_url`, `.oid`, `.repo_url`).
    """
    if hasattr(model_or_dir, "save_pretrained"):
        if not repo_id:
            raise ValueError("Pushing a model object needs repo_id='org/name' (a folder or zoo name can default it).")
        with tempfile.TemporaryDirectory(prefix="nasbert-push-") as folder:
            model_or_dir.save_pretrained(folder)
            if tokenizer is not None:
                tokenizer.save_pretrained(folder)
            write_metadata(folder, {"name": repo_id.split("/")[-1]})
            return push(folder, repo_id, private=private, token=token, revision=revision,
                        commit_message=commit_message, license=license, endpoint=endpoint, timeout=timeout)
    model_dir, zoo_name = _model_dir(model_or_dir)
    check_model_dir(model_dir)  # before its config is read as a NasBert one (a BERT's would not parse)
    name = read_metadata(model_dir, name=zoo_name)["name"]
    repo_id = repo_id_for(name, repo_id)
    seconds = hub_timeout(timeout)
    with bounded_hub_calls(seconds):
        return _push_folder(HfApi(endpoint=endpoint, token=token), model_dir, name, repo_id, seconds,
                            private=private, revision=revision, commit_message=commit_message, license=license)


def _push_folder(api, model_dir, name, repo_id, seconds, *, private, revision, commit_message, license):
    """Create the repo if needed and commit `model_dir` to it as one commit (see `push`)."""
    with _transport_errors(f"Could not reach the Hub at {api.endpoint} to push {model_dir} to {repo_id}.", seconds):
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        operations = stage(model_dir, repo.repo_id, license)
        uploaded = {operation.path_in_repo for operation in operations}
        # Files of the previous revision that this folder no longer has go in the same commit.
        stale = [path for path in api.list_repo_files(repo.repo_id, revision=revision) if path not in uploaded]
        operations += [CommitOperationDelete(path_in_repo=path) for path in stale if path != ".gitattributes"]
    message = (
        f"The connection to {api.endpoint} broke while pushing {model_dir} to {repo.repo_id}. A commit is all or "
        "nothing: the repository shows either its previous revision or this whole folder. Run the push again."
    )
    with _transport_errors(message, seconds):
        return api.create_commit(
            repo.repo_id,
            operations,
            commit_message=commit_message or f"Upload {name} with nasbert-hf",
            revision=revision,
        )


@contextlib.contextmanager
def _transport_errors(message, seconds):
    """Turn the HTTP client's transport errors (refused, reset, dropped mid-request, timed out) into
    `ConnectionError`; a timeout says which bound ran out (`seconds`).

    huggingface_hub's client raises them outside the `OSError` hierarchy; they are recognised by
    class name so as not to import its HTTP backend.
    """
    try:
        yield
    except Exception as error:
        names = {cls.__name__ for cls in type(error).__mro__}
        if "TransportError" not in names:
            raise
        if "TimeoutException" in names:
            message += (f" It did not answer within {seconds:g} s ({TIMEOUT_ENV}); the local model is unchanged. "
                        "Check the endpoint (HF_ENDPOINT) and your network, or raise the timeout.")
        raise ConnectionError(f"{message} ({type(error).__name__}: {error})") from error


def _model_dir(model_or_dir):
    """`(folder, zoo name)`: a folder as given (name None), or the current version of a zoo entry.

    The version folder, not the entry's link, is read, so a re-install during the push cannot mix
    two versions; the zoo name stands in for a `nasbert.json` without one.
    """
    path = Path(model_or_dir)
    if path.is_dir():
        return path, None
    resolution = resolve(str(model_or_dir))
    if resolution.source == "zoo":
        return Path(resolution.location), resolution.name
    raise FileNotFoundError(
        f"No model folder {model_or_dir!r}: expected a folder written by `save_pretrained` or a model name "
        "installed in the zoo (`nasbert list`)."
    )
