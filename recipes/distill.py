"""Distil an exported NAS-BERT model from the teacher on the pretraining corpus (the final models).

    python recipes/distill.py --model nasbert-out/nasbert-5M --output_dir out/nasbert-5M-kd --max_steps 2000
    python recipes/distill.py recipes/configs/tiny.yaml --model nasbert-out/nasbert-5M
    torchrun --nproc_per_node 2 recipes/distill.py --model nasbert-out/nasbert-5M --cpu
    accelerate launch --multi_gpu recipes/distill.py recipes/configs/base.yaml --model runs/nasbert-60M

A YAML/JSON file (first argument) gives the defaults: its `distill` section (as in the presets)
or, without one, its top-level keys; command-line flags override them. Add `--resume` to continue
a killed run from its last checkpoint. The work is done by `nasbert_hf.distill.distill`.
"""

import json
import sys
from dataclasses import fields
from pathlib import Path

from transformers import HfArgumentParser

from nasbert_hf.distill import DistillArguments, distill

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def config_defaults(path):
    """The `distill` section of a YAML/JSON file, or its top-level keys when it has none."""
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    values = data.get("distill", data) if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of DistillArguments (or a `distill:` section).")
    unknown = set(values) - {field.name for field in fields(DistillArguments)}
    if unknown:
        raise ValueError(f"Unknown distillation arguments {sorted(unknown)} in {path}.")
    return values


def parse_arguments(argv):
    parser = HfArgumentParser(DistillArguments)
    if argv and argv[0].endswith(CONFIG_SUFFIXES):
        parser.set_defaults(**config_defaults(argv[0]))
        argv = argv[1:]
    (args,) = parser.parse_args_into_dataclasses(argv)
    return args


def main(argv=None):
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    output_dir = distill(args)
    print(f"Distilled model written to {output_dir}")


if __name__ == "__main__":
    main()
