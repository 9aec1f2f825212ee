"""Train a NAS-BERT supernet: block-wise distillation from a teacher with progressive shrinking.

    python recipes/train_supernet.py recipes/configs/tiny.yaml --output_dir runs/tiny
    python recipes/train_supernet.py --search_space base --teacher bert-base-uncased --output_dir runs/base
    torchrun --standalone --nproc_per_node 2 recipes/train_supernet.py recipes/configs/tiny.yaml --cpu --output_dir runs/tiny
    accelerate launch --multi_gpu recipes/train_supernet.py recipes/configs/base.yaml --output_dir runs/base

A config (first argument, or `--search_space NAME_OR_FILE`) gives the search space and, in its
`training` section, the defaults of every argument; command-line flags override them. Add
`--resume` to continue a killed run from its last checkpoint. All the work is done by
`nasbert_hf.supernet_training.train_supernet`; this script only parses arguments.
"""

import sys

from accelerate import PartialState
from transformers import HfArgumentParser

from nasbert_hf.arguments import read_config, split_config_argument
from nasbert_hf.supernet_training import SupernetTrainingArguments, train_supernet


def parse_arguments(argv):
    parser = HfArgumentParser(SupernetTrainingArguments)
    config, argv = split_config_argument(argv)
    if config is None:
        config = parser.parse_known_args(argv)[0].search_space
    # The config's training keys (checked here) become the parser's defaults, which flags override.
    defaults = read_config(config).section("training", fields_of=SupernetTrainingArguments)
    parser.set_defaults(search_space=config, **defaults)
    (args,) = parser.parse_args_into_dataclasses(argv)
    return args


def main(argv=None):
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    run_dir = train_supernet(args)
    if PartialState().is_main_process:
        print(f"Supernet run written to {run_dir}")


if __name__ == "__main__":
    main()
