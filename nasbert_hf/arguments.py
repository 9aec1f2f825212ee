"""One front door for arguments: config files (presets or YAML/JSON) and dataclass flags.

- `read_config(name_or_path)` reads a preset (`nasbert_hf/presets/<name>.yaml`) or a YAML/JSON
  file into a `Config`, a dict whose `section(name)` returns one section (`search_space`,
  `training`, `distill`, ...) checked against the dataclass it fills. A malformed file raises a
  `ValueError` naming the file, line and column, which the `nasbert` command prints as one line.
- `add_dataclass_arguments(parser, Dataclass)` adds a flag per field to an argparse (sub-)parser
  exactly as `HfArgumentParser` does for the recipes (`--field_name` and `--field-name`), plus
  short aliases such as `--out`; the flags default to None, so that `given_values` returns only
  the ones given and a value left out falls back to the config file's, then the dataclass's.
"""

import copy
import dataclasses
import typing
from pathlib import Path
from types import MappingProxyType

import yaml
from transformers import HfArgumentParser

from .folders import read_json, read_text

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


# ---------------------------------------------------------------------------------------------
# Config files
# ---------------------------------------------------------------------------------------------


class Config(dict):
    """The top-level mapping of a config file; `path` names the file in error messages."""

    def __init__(self, values, path):
        super().__init__(values)
        self.path = path

    def section(self, name, fields_of=None, whole_if_absent=False):
        """A copy of section `name` (empty when absent, or the whole file when `whole_if_absent`:
        a flat file of one section's keys). With `fields_of`, a dataclass, an unknown key raises
        `ValueError` here, before any work starts, rather than a `TypeError` when it is built."""
        values = self.get(name, self if whole_if_absent else None) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{self.path}: the `{name}` section must be a mapping of argument names to values, "
                             f"got {type(values).__name__}.")
        if fields_of is not None:
            unknown = sorted(set(values) - {field.name for field in dataclasses.fields(fields_of)})
            if unknown:
                raise ValueError(f"Unknown {name} arguments {unknown} in {self.path} "
                                 f"(valid: the fields of {fields_of.__name__}).")
        return dict(values)


def preset_names():
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def is_config_file(argument):
    """Whether a command-line argument names a config file (`recipe.py config.yaml --flag ...`)."""
    return str(argument).endswith(CONFIG_SUFFIXES)


def resolve_config_path(name_or_path, presets=True):
    """`tiny`/`small`/`base` -> the packaged preset file (unless `presets=False`: the fine-tuning recipes,
    whose arguments the presets do not hold); anything else must be an existing YAML/JSON file."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text in preset_names() and not path.is_file():
        if presets:
            return PRESETS_DIR / f"{text}.yaml"
        raise FileNotFoundError(f"Config {text!r} is a preset of `nasbert compress`, not a file of recipe arguments; "
                                "pass a YAML/JSON file.")
    if not path.is_file():
        if presets:
            raise FileNotFoundError(f"Config {text!r} is neither a preset ({', '.join(preset_names())}) "
                                    "nor an existing file.")
        raise FileNotFoundError(f"Config {text!r} is not an existing file.")
    return path


def read_config(name_or_path, presets=True):
    """The `Config` of a preset name (if `presets`) or a YAML/JSON file (JSON by its `.json` suffix;
    an empty YAML file is an empty config)."""
    path = resolve_config_path(name_or_path, presets)
    values = _parse(path)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of section or argument names to values, "
                         f"got {type(values).__name__}.")
    return Config(values, path)


def _parse(path):
    # `yaml.YAMLError` is not a ValueError (the CLI would print a traceback) and its message does
    # not name the file, so it is re-raised as one ValueError naming file and position, in the
    # format `read_json` uses for JSON.
    if path.suffix == ".json":
        return read_json(path)
    try:
        return yaml.safe_load(read_text(path))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{path}: invalid YAML{where}: {getattr(error, 'problem', None) or error}.") from None


# ---------------------------------------------------------------------------------------------
# Dataclass flags
# ---------------------------------------------------------------------------------------------


def add_dataclass_arguments(parser, dataclass_type, aliases=None, only=None, skip=(), required=(),
                            default_help=" (default: {})", config_file_gives=False):
    """Add a flag for each field of `dataclass_type` to `parser` (an `argparse` parser or
    sub-parser), the flags `HfArgumentParser(dataclass_type)` makes, help from the fields' metadata.

    `aliases` maps a field name to extra flags (`{"output_dir": ["--out"]}`); `only`/`skip` choose
    the fields; `required` names fields that must be given. Every flag defaults to None (see
    `given_values`); `default_help` (formatted with the field's default) tells the help reader
    what a flag left out means. With `config_file_gives`, no flag is required, not even a field
    without a default: a `--config` file may hold it, and the caller checks what is still missing
    (`finetune.parse_arguments`).
    """
    aliases = aliases or {}
    hints = typing.get_type_hints(dataclass_type)
    for field in dataclasses.fields(dataclass_type):
        if not field.init or field.name in skip or (only is not None and field.name not in only):
            continue
        flag = copy.copy(field)  # HfArgumentParser rewrites `type` (Optional[X] -> X) in place
        flag.type = hints[field.name]
        metadata = {**field.metadata, "aliases": aliases.get(field.name, []), "help": _help(field, default_help)}
        if field.name in required:
            metadata["required"] = True
        flag.metadata = MappingProxyType(metadata)
        # The parser of the recipes, reused so that a command and a recipe take the same flags.
        HfArgumentParser._parse_dataclass_field(parser, flag)
        parser.set_defaults(**{field.name: None})
        if config_file_gives:
            # HfArgumentParser makes every field without a default a required flag.
            for action in parser._actions:
                if action.dest == field.name:
                    action.required = False


def _help(field, default_help):
    text = field.metadata.get("help", "")
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if default_help and not (default is None or default is dataclasses.MISSING or isinstance(default, bool)
                             or default == []):
        text += default_help.format(str(default).replace("%", "%%"))  # help is a %-format string
    return text


def given_values(args, dataclass_type):
    """The fields of `dataclass_type` given as flags in the parsed `args` (the others are None)."""
    names = (field.name for field in dataclasses.fields(dataclass_type))
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def split_config_argument(argv):
    """`(config, flags)` of a recipe's arguments: a leading YAML/JSON path gives the defaults
    (`recipe.py config.yaml --flag ...`); `config` is None without one."""
    if argv and is_config_file(argv[0]):
        return argv[0], list(argv[1:])
    return None, list(argv)
