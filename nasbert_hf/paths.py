"""Checks of the model folders a command reads and of the folder it writes its model to, made
before anything is loaded or written.

A fine-tuned, distilled, converted or installed model is the user's work. `nasbert glue`, `squad`,
`distill` and `convert` save a model into their output folder, over what is there, so each first
calls `check_output_folder`:

- a folder inside the model zoo (`$NASBERT_HOME`) is always refused: installed models change only
  through `nasbert install`, and every later load by name would get the new model;
- a folder that already holds a model (a `config.json` with weights) is refused, unless it is the
  input model the command updates in place (`nasbert distill` without `--out`) or an unfinished run
  of the same command, which it resumes (Trainer checkpoints of `glue` or `squad`).
"""

import os
from pathlib import Path

from .folders import CONFIG_FILE, WEIGHTS_FILES, read_json

# Pickled weights count too: the folder holds a model all the same.
MODEL_WEIGHTS = (*WEIGHTS_FILES, "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_path(name_or_path, what="model"):
    """Return `name_or_path`; raise `FileNotFoundError` when it can only be a folder and none is there.

    A name that is no Hub repository id (`/abs/path`, `./x`, `a/b/c`) would reach huggingface_hub,
    whose answer ("Repo id must be in the form ...") hides that a folder is missing. Repository ids
    and zoo names pass: the loader reports on those.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = os.fspath(name_or_path)
    if os.path.exists(text):
        return name_or_path
    try:
        validate_repo_id(text)
    except HFValidationError:
        raise FileNotFoundError(
            f"The {what} folder {text} does not exist (and it is not a Hub repository id 'org/name')."
        ) from None
    return name_or_path


def holds_model(folder):
    """Whether `folder` holds a saved model: a `config.json` with weights."""
    folder = Path(folder)
    return (folder / CONFIG_FILE).is_file() and any((folder / name).is_file() for name in MODEL_WEIGHTS)


def check_output_folder(output_dir, command, *, updates=None, resumable=None):
    """Raise unless `nasbert <command>` may write its model into `output_dir` (see the module doc).

    `updates`: the input model folder the command replaces in place, allowed as its output.
    `resumable(folder)`: whether a folder holding a model is an unfinished run of this command.
    """
    output = Path(output_dir).resolve()
    check_outside_zoo(output_dir, command)
    if not holds_model(output) or (updates is not None and output == Path(updates).resolve()):
        return
    if resumable is not None and resumable(output):
        return
    files = ", ".join(name for name in (CONFIG_FILE, *MODEL_WEIGHTS) if (output / name).is_file())
    raise FileExistsError(
        f"{output_dir} already holds a model ({files}), which `nasbert {command}` would replace; pass an "
        "output folder that holds no model, or move that model away first."
    )


def check_outside_zoo(output_dir, command):
    """Raise `ValueError` when `output_dir` is the model zoo or lies inside it (links followed)."""
    from .zoo import zoo_home

    output, zoo = Path(output_dir).resolve(), zoo_home().resolve()
    if output == zoo or zoo in output.parents:
        raise ValueError(
            f"{output_dir} lies inside the model zoo {zoo} ($NASBERT_HOME): `nasbert {command}` would change "
            "an installed model for every later load by name. Pass an output folder outside the zoo, and "
            "install the result with `nasbert install DIR --name NAME`."
        )


def trainer_run_of(head):
    """`resumable` for the Trainer commands: the folder holds Trainer checkpoints
    (`checkpoint-N/trainer_state.json`) of a model whose class ends with `head`
    (`ForSequenceClassification` for `glue`, `ForQuestionAnswering` for `squad`)."""

    def resumable(folder):
        for state in Path(folder).glob("checkpoint-*/trainer_state.json"):
            try:
                architectures = read_json(state.parent / CONFIG_FILE).get("architectures") or []
            except (OSError, ValueError, AttributeError):
                continue  # a damaged checkpoint says nothing about whose run this is
            if any(str(name).endswith(head) for name in architectures):
                return True
        return False

    return resumable
