"""The local model zoo, and loading models by name: `AutoModel.from_pretrained("nasbert-5M")`.

The zoo is a folder, `$NASBERT_HOME` (default `$XDG_CACHE_HOME/nasbert`, i.e. `~/.cache/nasbert`),
holding one exported model per sub-folder named after the model: `nasbert install DIR` and
`nasbert compress --install` put them there, `nasbert list` shows them.

Once `install_name_resolution()` has run (`import nasbert_hf` runs it), a name given to
`from_pretrained` of `AutoConfig`, `AutoTokenizer`, the `AutoModel*` classes NasBert registers, and
the NasBert config and model classes is looked up in this order:

1. a local file or folder at that path (what transformers does anyway);
2. the zoo, `$NASBERT_HOME/<name>`, for bare names (no `/`);
3. the Hub: a name with a slash as given (`org/nasbert-5M`); a bare name as
   `$NASBERT_HUB_ORG/<name>` when that variable is set, otherwise as given.

When nothing is found, `ModelNotFoundError` (an `OSError`, like transformers' own) lists every
place that was tried and says whether the Hub was offline or unreachable.

Why the `from_pretrained` entry points and not the file-download layer: transformers decides
"local folder or Hub repo" with `os.path.isdir(name)` in many places (config, weights, tokenizer,
remote code) before any file is fetched. Translating the name once, where it enters, gives every
later step an ordinary local folder or an ordinary repo id, so nothing downstream changes.
The hook is idempotent and `uninstall_name_resolution()` restores the original methods.
"""

import functools
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .modeling import NasBertConfig

METADATA_FILE = "nasbert.json"
# Zoo names become Hub repo names under `$NASBERT_HUB_ORG`, so they follow the Hub's rules.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


class ModelNotFoundError(OSError):
    """A model name matched no local folder, no zoo entry and no reachable Hub repository."""


def zoo_home(home=None):
    """The zoo folder: `home`, else `$NASBERT_HOME`, else `$XDG_CACHE_HOME/nasbert` (`~/.cache/nasbert`)."""
    if home is not None:
        return Path(home).expanduser()
    if os.environ.get("NASBERT_HOME"):
        return Path(os.environ["NASBERT_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache, "nasbert").expanduser()


def hub_org():
    """The organisation bare names are looked up under on the Hub (`$NASBERT_HUB_ORG`), or None."""
    return os.environ.get("NASBERT_HUB_ORG", "").strip().strip("/") or None


def check_name(name):
    """Raise `ValueError` unless `name` can name a zoo entry (and a Hub repo)."""
    if not isinstance(name, str) or not _NAME.match(name) or "--" in name or ".." in name:
        raise ValueError(
            f"Invalid model name {name!r}: use letters, digits, '-', '_' and '.', starting with a letter or "
            "digit, at most 96 characters, without '--' or '..' (e.g. 'nasbert-5M')."
        )
    return name


# -- metadata ---------------------------------------------------------------------------------


def read_metadata(model_dir):
    """The metadata of an exported model folder: its `nasbert.json`, completed from `config.json`.

    Keys: `name`, `architecture`, `params`, `params_no_embeddings`, `flops`, `latency_ms`,
    `teacher`, `corpus`, `losses`, `scores` (missing ones are None). A folder without
    `nasbert.json` (e.g. `nasbert convert` output) gets name, architecture and parameter counts
    from its config.
    """
    model_dir = Path(model_dir)
    path = model_dir / METADATA_FILE
    metadata = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(metadata).__name__}.")
    keys = ("name", "architecture", "params", "params_no_embeddings", "flops", "latency_ms", "teacher", "corpus")
    metadata = {key: None for key in keys + ("losses", "scores")} | metadata
    if metadata["name"] is None:
        metadata["name"] = model_dir.resolve().name
    if metadata["architecture"] is None or metadata["params"] is None:
        from .architecture import Architecture
        from .cost import count_params

        config = NasBertConfig.from_json_file(str(model_dir / "config.json"))
        metadata["architecture"] = metadata["architecture"] or str(Architecture.from_config(config))
        if metadata["params"] is None:
            metadata["params"] = count_params(config)
            metadata["params_no_embeddings"] = count_params(config, embeddings=False)
    return metadata


def check_model_dir(model_dir):
    """Raise unless `model_dir` is a saved NasBert model: `config.json` of type nasbert and safetensors weights."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"Model folder {model_dir} does not exist.")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{model_dir} has no config.json: expected a folder written by `save_pretrained`.")
    model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    if model_type != NasBertConfig.model_type:
        raise ValueError(
            f"{config_path} has model_type {model_type!r}; the zoo and `nasbert push` take 'nasbert' models."
        )
    if not any((model_dir / name).is_file() for name in _WEIGHTS):
        raise ValueError(
            f"{model_dir} has no safetensors weights ({' or '.join(_WEIGHTS)}); save the model with "
            "`save_pretrained` (pickled *.bin weights are not accepted)."
        )
    return model_dir


# -- the zoo ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooModel:
    name: str
    path: Path
    metadata: dict = field(repr=False)

    @property
    def params(self):
        return self.metadata.get("params")

    @property
    def latency_ms(self):
        return self.metadata.get("latency_ms")

    @property
    def scores(self):
        return self.metadata.get("scores")


def install(model_dir, name=None, *, home=None, overwrite=False):
    """Copy the model folder `model_dir` into the zoo as `name` and return its zoo path.

    `name` defaults to `nasbert.json`'s `name`, else the folder's name. The copy is made in a
    temporary folder of the zoo and renamed into place, so a half-copied model is never visible
    under its name. An existing entry is replaced only with `overwrite=True`.
    """
    source = check_model_dir(model_dir).resolve()
    name = check_name(name or read_metadata(source)["name"])
    root = zoo_home(home)
    target = root / name
    if target.resolve() == source:
        raise ValueError(f"{source} is already the zoo entry {name!r}.")
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"The zoo already has {name!r} at {target}; pass overwrite=True (`--force`) to replace it."
        )
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".git", "__pycache__", ".tmp-*"))
        if target.exists():
            # Two renames: the old entry disappears for an instant but is never seen half-replaced.
            retired = root / f".old-{name}-{uuid.uuid4().hex[:8]}"
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def list_models(home=None):
    """Every model in the zoo, sorted by name (entries that are not model folders are skipped)."""
    root = zoo_home(home)
    if not root.is_dir():
        return []
    models = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not (path / "config.json").is_file():
            continue
        models.append(ZooModel(path.name, path, read_metadata(path)))
    return models


def remove(name, *, home=None):
    """Delete the zoo entry `name`; raise `FileNotFoundError` (listing what is installed) if absent."""
    target = zoo_home(home) / check_name(name)
    if not (target / "config.json").is_file():
        installed = ", ".join(model.name for model in list_models(home)) or "none"
        raise FileNotFoundError(f"No model {name!r} in the zoo at {target.parent} (installed: {installed}).")
    retired = target.parent / f".old-{name}-{uuid.uuid4().hex[:8]}"
    os.replace(target, retired)
    shutil.rmtree(retired, ignore_errors=True)


# -- name resolution --------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """Where a name points: `source` is 'local', 'zoo', 'hub' or 'missing'; `searched` lists what was tried."""

    name: str
    location: str
    source: str
    searched: tuple


def resolve(name, *, home=None):
    """Find what `from_pretrained(name)` should load: a local path, a zoo folder or a Hub repo id.

    Nothing is fetched: a 'hub' result only says which repository to ask for.
    """
    text = os.fspath(name)
    if os.path.exists(text):
        return Resolution(text, text, "local", ())
    searched = [f"local folder {os.path.abspath(text)}: not found"]
    bare = "/" not in text and "\\" not in text
    if bare and _NAME.match(text):
        entry = zoo_home(home) / text
        if (entry / "config.json").is_file():
            return Resolution(text, str(entry), "zoo", tuple(searched))
        searched.append(f"model zoo {entry}: not installed (NASBERT_HOME={zoo_home(home)})")
    org = hub_org()
    repo_id = f"{org}/{text}" if bare and org else text
    if _REPO_ID.match(repo_id) or (bare and _NAME.match(repo_id)):
        hint = "" if not bare or org else " (set NASBERT_HUB_ORG to look under an organisation)"
        searched.append(f"Hub repository {repo_id!r} at {_endpoint()}{hint}")
        return Resolution(text, repo_id, "hub", tuple(searched))
    return Resolution(text, text, "missing", tuple(searched))


def _endpoint():
    from huggingface_hub import constants

    return constants.ENDPOINT


def _hub_failure(error, kwargs):
    """Why a Hub look-up failed, when the failure means "no such model here"; None for other errors."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    chain, seen = [], error
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(item, GatedRepoError) for item in chain):
        return None
    if any(isinstance(item, RepositoryNotFoundError) for item in chain):
        return "the Hub has no such repository (or it is private and no valid token was given)."
    if any(isinstance(item, HFValidationError) for item in chain):
        return "the name is not a valid Hub repository id."
    if kwargs.get("local_files_only"):
        return "local_files_only=True, so the Hub was not queried, and the local cache does not hold it."
    if constants.is_offline_mode() or any(isinstance(item, OfflineModeIsEnabled) for item in chain):
        return (
            "offline mode is on (HF_HUB_OFFLINE=1), so the Hub was not queried, and the local cache does not hold it."
        )
    network = ("TransportError", "NetworkError", "TimeoutException")
    if any(cls.__name__ in network for item in chain for cls in type(item).__mro__) or any(
        isinstance(item, LocalEntryNotFoundError) for item in chain
    ):
        return f"the Hub at {constants.ENDPOINT} could not be reached, and the local cache does not hold it."
    return None


def _not_found(resolution, reason):
    lines = [f"Could not find model {resolution.name!r}. Looked in:"]
    lines += [f"  - {place}" for place in resolution.searched]
    if reason:
        lines.append(f"The Hub look-up failed: {reason}")
    lines.append(
        "Pass a folder written by `save_pretrained`, a model installed with `nasbert install DIR`, "
        "or an existing Hub repository 'org/name'."
    )
    return ModelNotFoundError("\n".join(lines))


def _resolving(function):
    """Wrap a `from_pretrained` function so that its first argument goes through `resolve`."""

    @functools.wraps(function)
    def from_pretrained(cls, *args, **kwargs):
        name = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        if not isinstance(name, (str, os.PathLike)):
            return function(cls, *args, **kwargs)
        resolution = resolve(name)
        if resolution.source == "missing":
            raise _not_found(resolution, None)
        if args:
            args = (resolution.location, *args[1:])
        else:
            kwargs["pretrained_model_name_or_path"] = resolution.location
        try:
            return function(cls, *args, **kwargs)
        except OSError as error:
            reason = _hub_failure(error, kwargs) if resolution.source == "hub" else None
            if reason is None:
                raise
            # A nested call (AutoModel -> AutoConfig) already raised for the resolved name: report the
            # name the caller gave, chained to the original Hub error.
            cause = error.__cause__ if isinstance(error, ModelNotFoundError) and error.__cause__ else error
            raise _not_found(resolution, reason) from cause

    from_pretrained.__nasbert_resolving__ = True
    return from_pretrained


_ORIGINALS = {}  # class -> its own `from_pretrained` entry before the hook (None when inherited)


def _entry_points():
    from transformers import AutoConfig, AutoTokenizer

    from .auto import AUTO_CLASSES
    from .modeling import NasBertPreTrainedModel

    return [AutoConfig, AutoTokenizer, *AUTO_CLASSES, NasBertConfig, NasBertPreTrainedModel]


def install_name_resolution():
    """Make `from_pretrained(name)` consult the zoo and `$NASBERT_HUB_ORG` (see the module doc). Idempotent."""
    for cls in _entry_points():
        if cls in _ORIGINALS:
            continue
        function = cls.from_pretrained.__func__
        if getattr(function, "__nasbert_resolving__", False):
            continue
        _ORIGINALS[cls] = cls.__dict__.get("from_pretrained")
        cls.from_pretrained = classmethod(_resolving(function))


def uninstall_name_resolution():
    """Restore the original `from_pretrained` methods."""
    for cls, original in list(_ORIGINALS.items()):
        if original is None:
            del cls.from_pretrained
        else:
            cls.from_pretrained = original
        del _ORIGINALS[cls]
