"""The one front door for arguments: `read_config` and `add_dataclass_arguments` (nasbert_hf/arguments.py)."""

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest
from transformers import HfArgumentParser

from nasbert_hf.arguments import (
    add_dataclass_arguments,
    given_values,
    preset_names,
    read_config,
    split_config_argument,
)
from nasbert_hf.cli import build_parser
from nasbert_hf.distill import DistillArguments
from nasbert_hf.supernet_training import SupernetTrainingArguments

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@dataclass
class Example:
    output_dir: Optional[str] = field(default=None, metadata={"help": "Where to write."})
    max_steps: int = field(default=10, metadata={"help": "Steps."})
    budgets: List[str] = field(default_factory=list, metadata={"help": "Budgets."})
    resume: bool = field(default=False, metadata={"help": "Resume."})


def example_parser(**kwargs):
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Example, **kwargs)
    return parser


def test_flags_are_hf_argument_parser_flags_plus_aliases_all_unset_by_default():
    args = example_parser(aliases={"output_dir": ["--out"]}).parse_args([])
    assert given_values(args, Example) == {}  # every flag defaults to None: nothing given
    for argv in (["--out", "o"], ["--output-dir", "o"], ["--output_dir", "o"]):
        assert given_values(example_parser(aliases={"output_dir": ["--out"]}).parse_args(argv), Example) == {
            "output_dir": "o"}
    args = example_parser().parse_args(["--max-steps", "3", "--budgets", "5M", "10M", "--resume"])
    assert given_values(args, Example) == {"max_steps": 3, "budgets": ["5M", "10M"], "resume": True}


def test_help_names_defaults_and_required_fields_are_required(capsys):
    parser = example_parser(required=("output_dir",), default_help=" (default: {}, or the config's value)")
    help_text = parser.format_help()
    assert "Steps. (default: 10, or the config's value)" in help_text
    assert "Budgets. (default" not in help_text and "Resume. (default" not in help_text
    with pytest.raises(SystemExit):
        parser.parse_args([])
    assert "--output_dir" in capsys.readouterr().err


def test_only_and_skip_choose_the_fields():
    assert not hasattr(example_parser(only=("max_steps",)).parse_args([]), "output_dir")
    assert not hasattr(example_parser(skip=("max_steps",)).parse_args([]), "max_steps")


def _options(parser):
    return {option for action in parser._actions for option in action.option_strings}


def _subparser(command):
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


@pytest.mark.parametrize(
    "command, dataclass_type", [("supernet", SupernetTrainingArguments), ("distill", DistillArguments)]
)
def test_a_command_takes_every_flag_of_the_recipe_of_the_same_dataclass(command, dataclass_type):
    recipe = _options(HfArgumentParser(dataclass_type)) - {"-h", "--help"}
    if command == "distill":  # the model folder is the command's positional MODEL_DIR
        recipe -= {"--model"}
    assert recipe <= _options(_subparser(command))


def test_glue_and_squad_take_the_recipes_flags_and_the_documented_short_ones():
    from nasbert_hf.finetune import GLUE_ARGUMENTS, SQUAD_ARGUMENTS

    documented = {"--task", "--data-dir", "--output-dir", "--config", "--tokenizer", "--teacher-model",
                  "--distill-alpha", "--distill-temperature", "--max-seq-length", "--max-train-samples",
                  "--max-eval-samples", "--epochs", "--learning-rate", "--batch-size", "--seed", "--no-train",
                  "--no-eval", "--predict"}
    for command, dataclass_types, extra in (
        ("glue", GLUE_ARGUMENTS, set()),
        ("squad", SQUAD_ARGUMENTS, {"--version", "--doc-stride", "--train-file", "--validation-file",
                                    "--null-score-diff-threshold"}),
    ):
        options = _options(_subparser(command))
        recipe = _options(HfArgumentParser(dataclass_types)) - {"-h", "--help", "--model_name_or_path",
                                                                  "--model-name-or-path"}
        assert recipe <= options
        assert (documented - ({"--task", "--predict"} if command == "squad" else set())) | extra <= options


def test_glue_flags_override_the_config_file(tmp_path):
    from nasbert_hf.commands.glue import parse_training_arguments
    from nasbert_hf.finetune import GLUE_ARGUMENTS

    config = tmp_path / "glue.yaml"
    config.write_text("task_name: sst2\nlearning_rate: 1.0e-3\nnum_train_epochs: 2\nseed: 7\n", encoding="utf-8")
    args = _subparser("glue").parse_args(["m", "--config", str(config), "--task", "mrpc", "--output-dir", "o",
                                          "--epochs", "5", "--batch-size", "4", "--no-eval"])
    model_args, data_args, training_args = parse_training_arguments(args, GLUE_ARGUMENTS)
    assert (model_args.model_name_or_path, data_args.task_name, training_args.output_dir) == ("m", "mrpc", "o")
    assert (training_args.num_train_epochs, training_args.learning_rate, training_args.seed) == (5, 1e-3, 7)
    assert (training_args.per_device_train_batch_size, training_args.per_device_eval_batch_size) == (4, 4)
    assert (training_args.do_train, training_args.do_eval) == (True, False)


def test_supernet_flags_override_the_config_file_in_command_and_recipe(tmp_path):
    config = tmp_path / "space.yaml"
    config.write_text("search_space:\n  hidden_sizes: [16]\n  ops: [id, ffn:32]\n  num_slots: 2\n  num_blocks: 1\n"
                      "training:\n  max_steps: 7\n  pool_size: 5\n", encoding="utf-8")
    args = _subparser("supernet").parse_args(["--config", str(config), "--out", "o", "--max-steps", "3"])
    values = given_values(args, SupernetTrainingArguments)
    command = SupernetTrainingArguments.from_config(values.pop("search_space"), **values)
    sys.path.insert(0, str(RECIPES))
    try:
        from train_supernet import parse_arguments
    finally:
        sys.path.remove(str(RECIPES))
    recipe = parse_arguments([str(config), "--output_dir", "o", "--max_steps", "3"])
    assert command == recipe
    assert (command.max_steps, command.pool_size, command.output_dir) == (3, 5, "o")


def test_read_config_reads_presets_and_sections(tmp_path):
    assert {"tiny", "base"} <= set(preset_names())
    tiny = read_config("tiny")
    assert tiny.section("search_space")["num_blocks"] == 3
    assert tiny.section("distill", fields_of=DistillArguments)["max_steps"] == 60
    assert tiny.section("missing") == {}
    flat = tmp_path / "flat.json"
    flat.write_text('{"temperature": 2.0}', encoding="utf-8")
    assert read_config(flat).section("distill", whole_if_absent=True) == {"temperature": 2.0}
    assert read_config(flat).section("distill") == {}
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert read_config(empty) == {}


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.yaml", "training:\n  max_steps: [1\n  seed: 2\n", r"bad.yaml: invalid YAML at line 3, column 7: "),
        ("bad.yaml", "a: 1\n\tb: 2\n", r"bad.yaml: invalid YAML at line 2, column 1"),
        ("bad.json", '{"training":\n {"max_steps": 1,}}', r"bad.json: invalid JSON at line 2, column 18 \(char 30\)"),
        ("list.yaml", "- 1\n- 2\n", r"list.yaml: a config file must hold a mapping .* got list"),
    ],
)
def test_a_malformed_config_names_the_file_line_and_column(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_config(path)


def test_section_errors_name_the_file_and_the_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  max_step: 3\ndistill: 5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"Unknown training arguments \['max_step'\] in .*c.yaml \(valid: the fields "
                                         r"of SupernetTrainingArguments\)"):
        read_config(path).section("training", fields_of=SupernetTrainingArguments)
    with pytest.raises(ValueError, match=r"c.yaml: the `distill` section must be a mapping .* got int"):
        read_config(path).section("distill")
    with pytest.raises(FileNotFoundError, match=r"'nope.yaml' is neither a preset \(.*tiny.*\) nor an existing file"):
        read_config("nope.yaml")


def test_split_config_argument():
    assert split_config_argument(["c.yaml", "--x", "1"]) == ("c.yaml", ["--x", "1"])
    assert split_config_argument(["--x", "1"]) == (None, ["--x", "1"])
    assert split_config_argument([]) == (None, [])
