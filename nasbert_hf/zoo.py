"""The local model zoo, and loading models by name: `AutoModel.from_pretrained("nasbert-5M")`.

The zoo is a folder, `$NASBERT_HOME` (default `$XDG_CACHE_HOME/nasbert`, i.e. `~/.cache/nasbert`):
`nasbert install DIR` and `nasbert compress` (unless `--no-install`) put models there, `nasbert list` shows them.
Each entry `$NASBERT_HOME/<name>` is a symbolic link to a versioned copy,
`$NASBERT_HOME/.store/<name>-<id>/`. A (re-)install copies the model into a new version and swaps
the link with one `os.replace`, so the name always points to a complete model, old or new, even in
the middle of a replace; the replaced version stays a while for the loads still reading it.
Entries installed as plain folders (before the store) still load, list and remove; re-installing
one swaps it for a link in one step as well (Linux `renameat2`).

Once `install_name_resolution()` has run (`import nasbert_hf` runs it), `from_pretrained` of
`AutoConfig`, `AutoTokenizer`, the `AutoModel*` classes NasBert registers, the NasBert config and
model classes, and `transformers.pipeline(model=...)` resolve the names this project owns:

- a bare name installed in the zoo: `$NASBERT_HOME/<name>` (after a local folder of that name);
- a bare `nasbert-*` name that is not installed: the Hub repository `$NASBERT_HUB_ORG/<name>`
  when that variable is set, otherwise the name as given.

Every other argument (`bert-base-uncased`, `org/name`, a path, an object) goes to transformers
exactly as given, and its errors are transformers' own. When one of our names is found nowhere,
`ModelNotFoundError` (an `OSError`, like transformers' own) lists every place that was tried and
says whether the Hub was offline or unreachable.

Why the `from_pretrained` entry points and not the file-download layer: transformers decides
"local folder or Hub repo" with `os.path.isdir(name)` in many places (config, weights, tokenizer,
remote code) before any file is fetched. Translating the name once, where it enters, gives every
later step an ordinary local folder or an ordinary repo id, so nothing downstream changes. A zoo
name becomes the folder of its current version, so one load never mixes two versions.
`pipeline` is wrapped too because it looks the name up on the Hub itself (its revision, the
processors) before any `from_pretrained`. The hook is idempotent and
`uninstall_name_resolution()` restores the originals.
"""

import ctypes
import functools
import inspect
import logging
import os
import re
import shutil
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .folders import CONFIG_FILE, check_model_dir, share_permissions
from .folders import read_metadata as read_stored_metadata
from .modeling import NasBertConfig

try:
    import fcntl
except ImportError:  # Windows: installs are not locked against each other
    fcntl = None

logger = logging.getLogger(__name__)

STORE = ".store"  # the versioned copies that the zoo's entries link to
# How long a replaced version stays in the store: a load that resolved the name before the
# replace may still be reading its files (loads take seconds; this leaves a wide margin).
RETIRED_GRACE_SECONDS = 3600
# Bare names with this prefix are the project's own on the Hub: `$NASBERT_HUB_ORG/nasbert-5M`.
HUB_PREFIX = "nasbert-"
# Zoo names become Hub repo names under `$NASBERT_HUB_ORG`, so they follow the Hub's rules.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


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


def read_metadata(model_dir, name=None):
    """The metadata of an exported model folder: its `nasbert.json`, completed from `config.json`.

    Keys: `name`, `architecture`, `params`, `params_no_embeddings`, `flops`, `latency_ms`,
    `teacher`, `corpus`, `losses`, `scores` (missing ones are None). A folder without
    `nasbert.json` (e.g. `nasbert convert` output) gets architecture and parameter counts from its
    config, and its name from `name`, else the folder's name (a zoo link's, not its version's).
    Unreadable files raise `ValueError` naming the file.
    """
    model_dir = Path(model_dir)
    metadata = read_stored_metadata(model_dir) or {}
    keys = ("name", "architecture", "params", "params_no_embeddings", "flops", "latency_ms", "teacher", "corpus")
    metadata = {key: None for key in keys + ("losses", "scores")} | metadata
    if metadata["name"] is None:
        metadata["name"] = name or Path(os.path.abspath(model_dir)).name
    if metadata["architecture"] is None or metadata["params"] is None:
        from .architecture import Architecture
        from .cost import count_params

        config_path = model_dir / CONFIG_FILE
        try:
            config = NasBertConfig.from_json_file(str(config_path))
        except (OSError, ValueError) as error:
            raise ValueError(f"{config_path} is not a readable NasBert config: {error}") from error
        metadata["architecture"] = metadata["architecture"] or str(Architecture.from_config(config))
        if metadata["params"] is None:
            metadata["params"] = count_params(config)
            metadata["params_no_embeddings"] = count_params(config, embeddings=False)
    return metadata


# -- the zoo ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry; `problem` says why its metadata could not be read (then `metadata` is empty)."""

    name: str
    path: Path
    metadata: dict = field(repr=False)
    problem: Optional[str] = None

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

    `name` defaults to `nasbert.json`'s `name`, else the folder's name. The copy goes into a new
    version folder of the store, readable by every user (`share_permissions`), and the entry's
    link is then swapped to it in one `os.replace`: the name never points to a half-copied model,
    nor to nothing while an existing entry is replaced (only with `overwrite=True`).

    "Is the name free?" and the swap are one step under the store's lock (`_locked`), so of two
    installs of one name without `overwrite`, one fails. A replaced version is kept for
    `RETIRED_GRACE_SECONDS`, since a load that resolved the name before the swap may still be
    reading it; `discard_retired` (run by installs and `nasbert list`) deletes it afterwards.
    """
    source = check_model_dir(model_dir).resolve()
    name = check_name(name or read_metadata(model_dir)["name"])
    root = zoo_home(home)
    _check_home(root)
    entry = root / name
    _check_free(entry, source, overwrite)  # before the copy, to fail fast; again under the lock
    store = root / STORE
    store.mkdir(parents=True, exist_ok=True)
    version = store / f"{name}-{uuid.uuid4().hex[:12]}"
    staging = store / f".tmp-{version.name}"  # a partial copy never bears a version's name
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".git", "__pycache__", ".tmp-*"))
        share_permissions(staging)
        with _locked(store):
            _check_free(entry, source, overwrite)
            os.replace(staging, version)
            try:
                previous = _point(entry, version)
            except BaseException:
                shutil.rmtree(version, ignore_errors=True)
                raise
            _retire(previous, store)
            discard_retired(root, locked=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # left only when the copy or the check failed
    return entry


def _check_free(entry, source, overwrite):
    """Raise unless `entry` may be (re)installed: it is free, or `overwrite` replaces another model."""
    if not os.path.lexists(entry):
        return
    if entry.resolve() == source:
        raise ValueError(f"{source} is already the zoo entry {entry.name!r}.")
    if not overwrite:
        raise FileExistsError(
            f"The zoo already has {entry.name!r} at {entry}; pass overwrite=True (`--force`) to replace it."
        )


def _check_home(root):
    """Raise `NotADirectoryError` when the zoo folder is a file (a wrong `$NASBERT_HOME`)."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(_home_problem(root))


def _home_problem(root):
    return f"the zoo folder {root} ($NASBERT_HOME or --home) is a file, not a folder; point NASBERT_HOME at a folder."


@contextmanager
def _locked(store, wait=True):
    """Hold the store's lock (an `flock` on the store folder itself, so no lock file shows in the zoo)
    while the block runs; yield False without it when `wait` is False and another process holds it.
    Where `fcntl` is missing (Windows), nothing is locked."""
    if fcntl is None:
        yield True
        return
    descriptor = os.open(store, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)  # releases the lock


def _retire(previous, store):
    """Deal with what an entry held before a re-install: a version of the store is kept, stamped
    with the time it was replaced (its ctime, which `os.utime` sets to now) for `discard_retired`;
    a plain folder from before the store goes at once (no load can resolve to its new name)."""
    if previous is None:
        return
    if previous.parent == Path(os.path.realpath(store)):
        os.utime(previous)
    else:
        _discard(previous)


def discard_retired(home=None, *, locked=False):
    """Delete the store folders that no zoo entry links to, once `RETIRED_GRACE_SECONDS` have passed
    since they were last changed (replaced versions, copies of installs that were killed).

    Without `locked` it takes the store's lock, or does nothing when another process holds it.
    """
    root = zoo_home(home)
    store = root / STORE
    if not store.is_dir():
        return
    if not locked:
        with _locked(store, wait=False) as held:
            if held:
                discard_retired(home, locked=True)
        return
    linked = {_version_of(entry) for entry in root.iterdir()}  # real paths, as `_version_of` gives them
    deadline = time.time() - RETIRED_GRACE_SECONDS
    for folder in store.iterdir():
        try:
            stale = folder.lstat().st_ctime < deadline
        except FileNotFoundError:  # deleted meanwhile by `remove`, which takes no lock
            continue
        if stale and Path(os.path.realpath(folder)) not in linked:
            _discard(folder)


def _point(entry, version):
    """Make `entry` a link to `version` in one step; return what the entry held before, to retire (or None)."""
    link = entry.with_name(f".tmp-link-{entry.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.symlink(os.path.relpath(version, entry.parent), link, target_is_directory=True)
    except OSError as error:
        raise OSError(f"Could not create the link {link} -> {version}: the zoo at {entry.parent} needs a file "
                      f"system with symbolic links ({error}).") from error
    try:
        if entry.is_dir() and not entry.is_symlink():
            return _exchange(link, entry)  # a plain folder from before the store
        previous = _version_of(entry)
        os.replace(link, entry)
        return previous
    finally:
        if os.path.islink(link):
            os.unlink(link)


def _exchange(link, folder):
    """Put `link` where the plain `folder` is and return where the folder went, leaving no moment without one.

    `rename` cannot replace a folder by a link, but Linux's `renameat2(RENAME_EXCHANGE)` swaps the
    two names atomically. Elsewhere the folder is moved aside first: the name is missing for an instant.
    """
    retired = folder.with_name(f".old-{folder.name}-{uuid.uuid4().hex[:8]}")
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is not None:
        at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
        if renameat2(at_cwd, os.fsencode(link), at_cwd, os.fsencode(folder), exchange) == 0:
            os.replace(link, retired)  # `link` now names the old folder
            return retired
        logger.debug("renameat2 failed (%s); replacing %s in two steps", os.strerror(ctypes.get_errno()), folder)
    os.replace(folder, retired)
    os.replace(link, folder)
    return retired


def _version_of(entry):
    """The store folder a zoo link points to, or None (not a link, or pointing outside this zoo's store)."""
    if not entry.is_symlink():
        return None
    target = Path(os.path.realpath(entry))
    return target if target.parent == Path(os.path.realpath(entry.parent / STORE)) else None


def _discard(path):
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def list_models(home=None):
    """Every entry of the zoo, sorted by name.

    An entry that is not a whole model (a dangling link, an empty folder, an unreadable
    `config.json`, `nasbert.json` or weights file) is listed with `problem` set, saying what is
    wrong, rather than hidden or failing the whole listing. A zoo folder that is a file raises
    `NotADirectoryError`.
    """
    root = zoo_home(home)
    _check_home(root)
    if not root.is_dir():
        return []
    return [_zoo_model(path) for path in sorted(root.iterdir()) if not path.name.startswith(".")]


def _zoo_model(path):
    problem = _entry_problem(path)
    if problem is not None:
        return ZooModel(path.name, path, {}, problem)
    try:
        check_model_dir(path)  # a damaged config.json or weights file makes the entry broken too
        return ZooModel(path.name, path, read_metadata(path, name=path.name))
    except Exception as error:  # one unreadable entry must not hide the others
        problem = str(error) if str(path) in str(error) else f"{path}: {type(error).__name__}: {error}"
        return ZooModel(path.name, path, {}, problem)


def _entry_problem(entry):
    """Why the zoo entry `entry` holds no model (no `config.json`), or None: it holds one, or the
    zoo has no such entry at all."""
    if entry.parent.exists() and not entry.parent.is_dir():
        return _home_problem(entry.parent)
    if not os.path.lexists(entry) or (entry / CONFIG_FILE).is_file():
        return None
    if entry.is_symlink() and not entry.exists():
        problem = f"is a link to {os.readlink(entry)}, which is missing"
    elif not entry.is_dir():
        problem = "is a file, not a model folder"
    else:
        problem = "is an empty folder" if not any(entry.iterdir()) else f"is a folder without {CONFIG_FILE}"
    return f"{entry} {problem}; install the model again (`nasbert install DIR --name {entry.name} --force`)."


def remove(name, *, home=None):
    """Delete the zoo entry `name`; raise `FileNotFoundError` (listing what is installed) if absent."""
    entry = zoo_home(home) / check_name(name)
    if entry.is_symlink():
        version = _version_of(entry)
        os.unlink(entry)
        _discard(version)
        return
    if not (entry / CONFIG_FILE).is_file():
        installed = ", ".join(model.name for model in list_models(home)) or "none"
        raise FileNotFoundError(f"No model {name!r} in the zoo at {entry.parent} (installed: {installed}).")
    retired = entry.with_name(f".old-{name}-{uuid.uuid4().hex[:8]}")
    os.replace(entry, retired)
    _discard(retired)


# -- name resolution --------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """Where a name points. `source`: 'zoo', 'hub' or 'missing' for the project's own names (see
    `owned`); 'local' (an existing path) or 'other' for everything transformers resolves by itself.
    `searched` lists what was tried."""

    name: str
    location: str
    source: str
    searched: tuple

    @property
    def owned(self):
        """Whether the hook translates this name; all others reach transformers unchanged."""
        return self.source in ("zoo", "hub", "missing")


def resolve(name, *, home=None):
    """Find what `from_pretrained(name)` loads once the hook is on: a local path, a zoo folder or a Hub repo id.

    A zoo name resolves to the folder of its current version, so that everything one load reads
    comes from the same install. Nothing is fetched: a 'hub' result only says which repository to ask for.
    """
    text = os.fspath(name)
    if not isinstance(text, str):
        return Resolution(text, text, "other", ())
    if os.path.exists(text):
        return Resolution(text, text, "local", ())
    if not _NAME.match(text):  # 'org/name', './folder', ...: transformers' business
        return Resolution(text, text, "other", ())
    searched = [f"local folder {os.path.abspath(text)}: not found"]
    entry = zoo_home(home) / text
    if os.path.isfile(os.path.join(entry, CONFIG_FILE)):
        return Resolution(text, os.path.realpath(entry), "zoo", tuple(searched))
    problem = _entry_problem(entry)
    if os.path.lexists(entry):  # installed, but broken: say so rather than look elsewhere
        return Resolution(text, text, "missing", (*searched, f"model zoo: {problem}"))
    if not text.startswith(HUB_PREFIX):
        return Resolution(text, text, "other", ())
    searched.append(f"model zoo: {problem}" if problem else
                    f"model zoo {entry}: not installed (NASBERT_HOME={zoo_home(home)})")
    org = hub_org()
    if org is None:
        searched.append(f"Hub repository {text!r} at {_endpoint()} (set NASBERT_HUB_ORG to look under an organisation)")
        return Resolution(text, text, "hub", tuple(searched))
    repo_id = f"{org}/{text}"
    if not _REPO_ID.match(repo_id):
        searched.append(f"the Hub: NASBERT_HUB_ORG={org!r} is not a valid organisation name")
        return Resolution(text, text, "missing", tuple(searched))
    searched.append(f"Hub repository {repo_id!r} at {_endpoint()}")
    return Resolution(text, repo_id, "hub", tuple(searched))


def _owned(name):
    """`resolve(name)` when the name is one of the project's, else None (pass it through untouched)."""
    if not isinstance(name, (str, os.PathLike)):
        return None
    try:
        resolution = resolve(name)
    except Exception:  # the hook must never break a load that is not ours
        logger.debug("Could not check whether %r is a zoo or Hub name; passing it through", name, exc_info=True)
        return None
    return resolution if resolution.owned else None


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


def _reported(resolution, call, kwargs):
    """Run `call()` for an owned name; a Hub failure meaning "no such model" becomes `ModelNotFoundError`."""
    if resolution.source == "missing":
        raise _not_found(resolution, None)
    try:
        return call()
    except OSError as error:
        reason = _hub_failure(error, kwargs) if resolution.source == "hub" else None
        if reason is None:
            raise
        # A nested call (AutoModel -> AutoConfig) already raised for the resolved name: report the
        # name the caller gave, chained to the original Hub error.
        cause = error.__cause__ if isinstance(error, ModelNotFoundError) and error.__cause__ else error
        raise _not_found(resolution, reason) from cause


def _resolving(function):
    """Wrap a `from_pretrained` function: the project's names are translated, all else passes as given."""

    @functools.wraps(function)
    def from_pretrained(cls, *args, **kwargs):
        resolution = _owned(args[0] if args else kwargs.get("pretrained_model_name_or_path"))
        if resolution is None:
            return function(cls, *args, **kwargs)
        if args:
            args = (resolution.location, *args[1:])
        else:
            kwargs["pretrained_model_name_or_path"] = resolution.location
        return _reported(resolution, lambda: function(cls, *args, **kwargs), kwargs)

    from_pretrained.__nasbert_resolving__ = True
    return from_pretrained


_PIPELINE_NAMES = ("model", "config", "tokenizer")  # the arguments of `pipeline` that name a model folder


def _resolving_pipeline(function):
    """Wrap `transformers.pipeline`: its `model`, `config` and `tokenizer` names are translated up front.

    The Auto classes alone are not enough: `pipeline` first resolves the name's Hub revision and
    looks for processor files under it, which for a zoo name means Hub requests (and retries when
    offline) for a repository that does not exist.
    """
    parameters = enumerate(inspect.signature(function).parameters)
    positions = {name: index for index, name in parameters if name in _PIPELINE_NAMES}

    @functools.wraps(function)
    def pipeline(*args, **kwargs):
        args, resolutions = list(args), []
        for name, index in positions.items():
            value = args[index] if index < len(args) else kwargs.get(name)
            resolution = _owned(value)
            if resolution is None:
                continue
            resolutions.append(resolution)
            if index < len(args):
                args[index] = resolution.location
            else:
                kwargs[name] = resolution.location
        if not resolutions:
            return function(*args, **kwargs)
        for resolution in resolutions:
            if resolution.source == "missing":
                raise _not_found(resolution, None)
        # A Hub failure is reported for the first of our names (the model's, usually the only one).
        return _reported(resolutions[0], lambda: function(*args, **kwargs), kwargs)

    pipeline.__nasbert_resolving__ = True
    return pipeline


_ORIGINALS = {}  # (owner, attribute) -> the owner's own value before the hook (None when inherited or lazy)


def _entry_points():
    """(owner, attribute, wrapper) for every entry point the hook wraps."""
    import transformers
    import transformers.pipelines
    from transformers import AutoConfig, AutoTokenizer

    from .auto import AUTO_CLASSES
    from .modeling import NasBertPreTrainedModel

    classes = [AutoConfig, AutoTokenizer, *AUTO_CLASSES, NasBertConfig, NasBertPreTrainedModel]
    points = [(cls, "from_pretrained", lambda cls=cls: classmethod(_resolving(cls.from_pretrained.__func__)))
              for cls in classes]
    pipeline = transformers.pipelines.pipeline
    wrapped = pipeline if getattr(pipeline, "__nasbert_resolving__", False) else _resolving_pipeline(pipeline)
    # Both names get the same wrapper. The package first: its lazy attribute would copy the wrapper
    # from `transformers.pipelines` if that came first, and the original could not be restored.
    points += [(owner, "pipeline", lambda: wrapped) for owner in (transformers, transformers.pipelines)]
    return points


def install_name_resolution():
    """Make `from_pretrained(name)` and `pipeline(model=name)` resolve the project's names (see the module doc).

    Idempotent; every name that is not the project's passes through unchanged.
    """
    for owner, attribute, wrapper in _entry_points():
        current = getattr(owner, attribute)
        current = getattr(current, "__func__", current)
        if (owner, attribute) in _ORIGINALS or getattr(current, "__nasbert_resolving__", False):
            continue
        _ORIGINALS[owner, attribute] = owner.__dict__.get(attribute)
        setattr(owner, attribute, wrapper())


def uninstall_name_resolution():
    """Restore the original `from_pretrained` methods and `pipeline`."""
    for (owner, attribute), original in list(_ORIGINALS.items()):
        if original is None:
            delattr(owner, attribute)
        else:
            setattr(owner, attribute, original)
        del _ORIGINALS[owner, attribute]
