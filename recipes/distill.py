"""Distil an exported NAS-BERT model from the teacher on the pretraining corpus (the final models).

    python recipes/distill.py --model nasbert-out/nasbert-5M --output_dir out/nasbert-5M-kd --max_steps 2000
    python recipes/distill.py recipes/configs/tiny.yaml --model nasbert-out/nasbert-5M
    torchrun --nproc_per_node 2 recipes/distill.py --model nasbert-out/nasbert-5M --cpu
    accelerate launch --multi_gpu recipes/distill.py recipes/configs/base.yaml --model runs/nasbert-60M

A YAML/JSON file (first argument) gives the defaults: its `distill` section (as in the presets)
or, without one, its top-level keys; command-line flags override them. Add `--resume` to continue
a killed run from its last checkpoint. The work is done by `nasbert_hf.distill.distill`.
"""

import sys

from transformers import HfArgumentParser

from nasbert_hf.arguments import read_config, split_config_argument
from nasbert_hf.distill import DistillArguments, distill


def parse_arguments(argv):
    parser = HfArgumentParser(DistillArguments)
    config, argv = split_config_argument(argv)
    if config is not None:
        # Its `distill` section (as in the presets) or, without one, its top-level keys.
        parser.set_defaults(**read_config(config).section("distill", fields_of=DistillArguments, whole_if_absent=True))
    (args,) = parser.parse_args_into_dataclasses(argv)
    return args


def main(argv=None):
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    output_dir = distill(args)
    print(f"Distilled model written to {output_dir}")


if __name__ == "__main__":
    main()
