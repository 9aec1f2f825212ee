"""Model and run folders: the names of their files, writing files whole, and checking what they hold.

Every file this project writes goes through `atomic_path` (or `atomic_write_text` / `write_json`
built on it): the content goes to a hidden temporary file beside the target, which is renamed onto
it only once it is complete, so a reader or a crash never sees half a file. A whole folder is
written the same way in `atomic_folder`.

A model folder holds what `save_pretrained` writes (`config.json`, safetensors weights) plus, for
the models this project exports, `nasbert.json` (`METADATA_FILE`, read and written only by
`read_metadata` / `write_metadata`) and a model card. A supernet run folder holds its run config,
the supernet's weights and the surviving candidates.
"""

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs there are not guarded against each other
    fcntl = None

CONFIG_FILE = "config.json"
METADATA_FILE = "nasbert.json"
MODEL_CARD_FILE = "README.md"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILES = (WEIGHTS_FILE, WEIGHTS_INDEX_FILE)
SUMMARY_FILE = "summary.json"  # OUT/summary.json of `nasbert compress`
RUN_CONFIG_FILE = "run_config.json"
SUPERNET_WEIGHTS_FILE = "supernet.safetensors"
CANDIDATES_FILE = "candidates.json"
LOCK_FILE = ".nasbert.lock"  # held by the command writing a folder (`folder_lock`)


class ModelFolderError(FileNotFoundError, ValueError):
    """A model folder lacks a file it needs. It is a missing file (`FileNotFoundError`) and an
    unusable model folder (`ValueError`, what the zoo and distillation raise for bad folders), so
    callers that catch either keep working."""


# -- writing files whole -------------------------------------------------------------------------


def temporary_path(path):
    """A hidden temporary name beside `path` (same folder, so renaming it onto `path` is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_path(path):
    """Yield a temporary path to write `path`'s content to; it is renamed onto `path` when the
    block succeeds and removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path, text):
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, data, **options):
    """Write `data` as JSON (`json.dumps` options; default `indent=2`), atomically."""
    return atomic_write_text(path, json.dumps(data, **{"indent": 2, **options}) + "\n")


def read_text(path):
    """The UTF-8 text of `path`; other bytes raise `ValueError` naming the file and the offset."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason}).") from None


def read_json(path):
    """The one JSON reader: malformed JSON raises `ValueError` naming the file, line and column,
    where a bare `JSONDecodeError` names neither the file nor what was being read."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno} (char {error.pos}): {error.msg}."
        ) from None


@contextmanager
def atomic_folder(path):
    """Yield a fresh hidden folder beside `path` to write a whole folder into; when the block
    succeeds it gets an ordinary folder's permissions and replaces `path`, when it fails it is
    deleted (the previous `path`, if any, is left as it was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        share_permissions(staging)  # mkdtemp made it 0700
        replace_folder(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(staging, target):
    """Move a finished `staging` folder to `target`, replacing any previous one."""
    target = Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def share_permissions(folder):
    """Give `folder` and everything in it the modes of an ordinary new folder: 0755/0644 under umask 022.

    `tempfile.mkdtemp` makes 0700 folders, so an export or a zoo built from them would be
    unreadable to the other users of a shared machine. Links are left alone.
    """
    mask = _umask()
    folder_mode, file_mode = 0o777 & ~mask, 0o666 & ~mask
    os.chmod(folder, folder_mode)
    for parent, folders, files in os.walk(folder):
        for name, mode in [(name, folder_mode) for name in folders] + [(name, file_mode) for name in files]:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                os.chmod(path, mode)


def _umask():
    """The process umask, read without changing it where Linux shows it (/proc), else by setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# -- one writer per folder ----------------------------------------------------------------------


class FolderInUseError(OSError):
    """Another process holds the folder's lock (`folder_lock`)."""


@contextmanager
def folder_lock(folder, command):
    """Hold `folder`'s lock (`LOCK_FILE` in it, created with the folder if need be) while the block
    runs, or raise `FolderInUseError` at once, naming the process (and its `command`) that holds it.

    An `flock` lock dies with its process, so a run killed with SIGKILL leaves no stale lock and
    resumes with the same command. The file stays: deleting it would let a third process lock a
    new file while the second still holds the old one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+", encoding="utf-8") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown, just starting"  # it writes its id once it holds the lock
                raise FolderInUseError(
                    f"{folder} is in use by another process (process id {holder}); wait for it to finish, "
                    "or choose another output folder."
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}, {command}\n")
        handle.flush()
        yield  # closing the file releases the lock


# -- metadata ------------------------------------------------------------------------------------


def read_metadata(model_dir):
    """The `nasbert.json` object of a model folder, or None when it has none."""
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        return None
    metadata = read_json(path)
    if not isinstance(metadata, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(metadata).__name__}.")
    return metadata


def write_metadata(model_dir, metadata):
    return write_json(Path(model_dir) / METADATA_FILE, metadata)


# -- checking model folders ----------------------------------------------------------------------


def check_model_dir(model_dir, model_type="nasbert"):
    """Return `model_dir` as a `Path`; raise unless it is a saved model: a `config.json` (of
    `model_type`, unless that is None) and complete safetensors weights (see `check_weights`)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"Model folder {model_dir} does not exist; pass a folder written by save_pretrained.")
    config_path = model_dir / CONFIG_FILE
    if not config_path.is_file():
        raise ModelFolderError(f"{model_dir} has no {CONFIG_FILE}: expected a folder written by `save_pretrained`.")
    found = read_json(config_path).get("model_type")
    if model_type is not None and found != model_type:
        raise ValueError(
            f"{config_path} has model_type {found!r}; the zoo and `nasbert push` take {model_type!r} models."
        )
    check_weights(model_dir)
    return model_dir


def check_weights(model_dir):
    """Raise `ValueError` naming the file unless the folder's safetensors weights are all there and whole.

    A copy or download cut short leaves a file that looks fine until `from_pretrained` fails on
    it, possibly on another machine after a push: check `model.safetensors`, or every shard the
    `model.safetensors.index.json` names, before it is installed or shared.
    """
    model_dir = Path(model_dir)
    present = [model_dir / name for name in WEIGHTS_FILES if (model_dir / name).is_file()]
    refuse_pickle_weights(model_dir)
    if not present:
        raise ModelFolderError(
            f"{model_dir} has no safetensors weights: no model weights ({WEIGHTS_FILE}) nor a shard index "
            f"({WEIGHTS_INDEX_FILE}). Save the model with `save_pretrained` (e.g. by `nasbert convert` or "
            "`nasbert compress`); pickled *.bin weights are not accepted."
        )
    for path in present:
        if path.name == WEIGHTS_INDEX_FILE:
            for shard in _shards(path):
                check_safetensors(shard)
        else:
            check_safetensors(path)


def _shards(index_path):
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path} has no `weight_map` naming the weight shards.")
    shards = [index_path.parent / name for name in sorted(set(weight_map.values()))]
    for shard in shards:
        if not shard.is_file():
            raise ValueError(f"{index_path} names the shard {shard.name}, which is missing from {index_path.parent}.")
    return shards


def check_model_weights(model_dir):
    """`check_safetensors` on every `*.safetensors` file of a saved model folder, of any model type,
    and `refuse_pickle_weights` (call it before `from_pretrained`, e.g. in `glue`, `squad`, `convert`,
    `export-onnx`, for teachers and checkpoints)."""
    refuse_pickle_weights(model_dir)
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        check_safetensors(path)


def refuse_pickle_weights(model_dir):
    """Raise `ModelFolderError` when a folder's weights are pickles only (`pytorch_model*.bin`):
    `from_pretrained` would unpickle them, which can run code from whoever wrote the file, or fail
    with a bare `UnpicklingError`. Pickles are never loaded; a folder with safetensors passes."""
    model_dir = Path(model_dir)
    if any(model_dir.glob("*.safetensors")):
        return
    pickles = sorted(path.name for path in model_dir.glob("pytorch_model*.bin"))
    if pickles:
        raise ModelFolderError(
            f"{model_dir}: this folder holds only pickle weights ({', '.join(pickles)}); convert it to safetensors "
            "(load it once where you trust its origin and save it again with `save_pretrained`), then pass "
            "that folder. Pickled weights are never loaded."
        )


def check_safetensors(path):
    """Raise `ValueError` naming `path` unless it is a readable safetensors file whose size matches
    its header (no tensor is read): a truncated or corrupt file would otherwise fail deep inside
    `from_pretrained` or `load_state`, possibly on another machine, with a bare `SafetensorError`.

    The format is an 8-byte header length, a JSON header giving each tensor's byte range, then
    the data: the file must end exactly where the last range ends.
    """
    from safetensors import safe_open

    path = Path(path)
    unreadable = f"{path} is not a readable safetensors file"
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little") if size >= 8 else None
        if header_size is None or 8 + header_size > size:
            raise ValueError(
                f"{unreadable}: it is truncated ({size} bytes), ending inside its header. Copy or save it again."
            )
        header = handle.read(header_size)
    expected = _safetensors_size(header, header_size)
    if expected is not None and expected != size:
        state = "truncated" if size < expected else "longer than its header says"
        raise ValueError(
            f"{unreadable}: it is {state} (its header describes {expected} bytes, the file has {size}). "
            "Copy or save it again."
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as error:  # safetensors raises its own SafetensorError for every kind of damage
        message = " ".join(str(error).split())
        raise ValueError(f"{unreadable} ({message}): it is truncated or corrupt. Copy or save it again.") from error


def _safetensors_size(header, header_size):
    """The file size a safetensors header implies, or None when the header is malformed (safe_open says how)."""
    try:
        tensors = json.loads(header)
        ends = [int(info["data_offsets"][1]) for key, info in tensors.items() if key != "__metadata__"]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    return 8 + header_size + max(ends, default=0)
