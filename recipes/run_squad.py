"""Fine-tune and evaluate on SQuAD v1.1/v2.0 with `Trainer` (the library does the work: `nasbert_hf.finetune`).

    python recipes/run_squad.py --model_name_or_path MODEL --data_dir ../shared/data/squad --version 1.1 \
        --output_dir out/squad --do_train --do_eval
    python recipes/run_squad.py config.yaml       # the same arguments from a YAML or JSON file

Every `TrainingArguments` flag works; `accelerate launch` / `torchrun` run it on several devices.
"""

import sys

# Importing nasbert_hf also registers NasBert with the Auto classes.
from nasbert_hf.finetune import SQUAD_ARGUMENTS, parse_arguments, run_squad


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return run_squad(*parse_arguments(SQUAD_ARGUMENTS, argv=argv))


if __name__ == "__main__":
    main()
