"""Fine-tune and evaluate on a GLUE task with `Trainer` (the library does the work: `nasbert_hf.finetune`).

    python recipes/run_glue.py --model_name_or_path MODEL --task_name sst2 --data_dir ../shared/data/glue \
        --output_dir out/sst2 --do_train --do_eval
    python recipes/run_glue.py config.yaml        # the same arguments from a YAML or JSON file

Every `TrainingArguments` flag works; `accelerate launch` / `torchrun` run it on several devices.
"""

import sys

# Importing nasbert_hf also registers NasBert with the Auto classes.
from nasbert_hf.finetune import GLUE_ARGUMENTS, parse_arguments, run_glue


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return run_glue(*parse_arguments(GLUE_ARGUMENTS, argv=argv))


if __name__ == "__main__":
    main()
