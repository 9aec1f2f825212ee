"""Downstream fine-tuning with `Trainer`: GLUE classification/regression and SQuAD question answering.

Any sequence-classification / question-answering checkpoint works (`import nasbert_hf` makes
NasBert models loadable with the Auto classes): a searched NasBert model, a BERT, or a BERT
converted with `from_bert`. With `teacher_model`, the student also learns from a teacher already
fine-tuned on the task (task distillation, as NAS-BERT's final fine-tuning does). Arguments are
dataclasses for `HfArgumentParser`, so the recipes take flags or a YAML/JSON file.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from . import glue, squad
from .arguments import is_config_file, read_config
from .folders import atomic_write_text, check_model_weights, write_json
from .metrics import load_metric
from .paths import check_model_path, check_output_folder, trainer_run_of
from .training import check_max_length

# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "Folder or Hub name of the model to fine-tune."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer folder/name; default: the model's."})
    teacher_model: str | None = field(
        default=None, metadata={"help": "A teacher already fine-tuned on the task: turns on task distillation."}
    )
    distill_alpha: float = field(
        default=0.5, metadata={"help": "Weight of the teacher (soft) loss; the hard-label loss gets 1 - alpha."}
    )
    distill_temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of the soft loss."})


@dataclass
class GlueArguments:
    task_name: str = field(metadata={"help": f"GLUE task: one of {', '.join(glue.GLUE_TASKS)}."})
    data_dir: str | None = field(
        default=None, metadata={"help": "GLUE download folder (holding SST-2/, ...) or a task folder; none: the Hub."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N rows only."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Predict the first N test rows only."})


@dataclass
class SquadArguments:
    version: str = field(
        default="1.1", metadata={"help": "SQuAD version: 1.1 or 2.0 (unanswerable questions).", "choices": ("1.1", "2.0")}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder with train-v{version}.json and dev-v{version}.json; none: the Hub."}
    )
    train_file: str | None = field(default=None, metadata={"help": "SQuAD JSON to train on (overrides data_dir)."})
    validation_file: str | None = field(default=None, metadata={"help": "SQuAD JSON to evaluate on."})
    max_seq_length: int = field(default=384, metadata={"help": "Window length in tokens (question + context)."})
    doc_stride: int = field(default=128, metadata={"help": "Overlap in tokens between windows of a long context."})
    n_best_size: int = field(default=20, metadata={"help": "Start/end candidates per window in post-processing."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer in tokens."})
    null_score_diff_threshold: float = field(
        default=0.0, metadata={"help": "v2.0: answer '' when null score - best span score exceeds this."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N questions only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N questions only."})

    @property
    def version_2_with_negative(self):
        return str(self.version) == "2.0"


GLUE_ARGUMENTS = (ModelArguments, GlueArguments, TrainingArguments)
SQUAD_ARGUMENTS = (ModelArguments, SquadArguments, TrainingArguments)


def parse_arguments(dataclass_types, argv=None, config_file=None, overrides=None, required=()):
    """Parse the argument dataclasses from a YAML/JSON `config_file` updated by `overrides` (a dict),
    or, without either, from command-line flags `argv` (`HfArgumentParser` conventions); an `argv`
    that is a single `.yaml`/`.yml`/`.json` path is read as the config file. `required` names
    fields with a default that must be given all the same (`nasbert glue` needs `output_dir`)."""
    parser = HfArgumentParser(dataclass_types)
    if argv is not None and len(argv) == 1 and is_config_file(argv[0]):
        config_file, argv = argv[0], None  # `python recipes/run_glue.py config.yaml`
    if config_file is None and overrides is None:
        return parser.parse_args_into_dataclasses(args=argv)
    # The file is flat, as `HfArgumentParser.parse_yaml_file` reads it: argument names at top level.
    values = {} if config_file is None else dict(read_config(config_file, presets=False))
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    source = config_file or "the given arguments"
    # parse_dict builds the dataclasses directly: a missing required field would be a TypeError
    # traceback and an unknown key an error that names neither the key's file nor the fix.
    fields = [f for cls in dataclass_types for f in dataclasses.fields(cls) if f.init]
    missing = [f.name for f in fields if f.name not in values
               and (f.name in required or f.default is f.default_factory is dataclasses.MISSING)]
    if missing:
        flags = ", ".join(f"{name} (--{name.replace('_', '-')})" for name in missing)
        raise ValueError(f"{source}: missing required argument(s): {flags}.")
    unknown = sorted(set(values) - {f.name for f in fields})
    if unknown:
        raise ValueError(f"{source}: unknown argument(s): {', '.join(unknown)} (a fine-tuning config is flat: "
                         "the recipe's argument names, such as learning_rate, at top level).")
    return parser.parse_dict(values)


def check_output_dir(output_dir, model_args, command, head):
    """Check the folders of a fine-tuning run before anything is loaded or written.

    The model, tokenizer and teacher folders must exist (`check_model_path`). The output folder
    must not be, hold or lie inside one of them: Trainer saves the fine-tuned model and its config
    into `output_dir`, over the pretrained model it would replace the weights and leave files such
    as `nasbert.json` describing a model that is gone. Nor may it lie in the zoo or hold another
    model, unless it is an unfinished run of `nasbert <command>` (Trainer checkpoints of a model
    whose class ends with `head`): `check_output_folder`.
    """
    output = Path(output_dir).resolve()
    read = {"model": model_args.model_name_or_path, "tokenizer": model_args.tokenizer_name,
            "teacher_model": model_args.teacher_model}
    for flag, model in read.items():
        if model is None:
            continue
        check_model_path(model, flag.replace("_model", ""))
        if not Path(model).is_dir():
            continue  # a Hub name: nothing local to overwrite
        folder = Path(model).resolve()
        if output == folder or folder in output.parents or output in folder.parents:
            relation = "is" if output == folder else "lies inside" if folder in output.parents else "contains"
            raise ValueError(
                f"output_dir {output_dir} {relation} the {flag} folder {model}: fine-tuning saves its model, "
                "tokenizer and checkpoints there, over or beside that one; pass an output folder outside it."
            )
    check_output_folder(output_dir, command, resumable=trainer_run_of(head))


# ---------------------------------------------------------------------------------------------
# Task distillation
# ---------------------------------------------------------------------------------------------

LOGIT_FIELDS = ("logits", "start_logits", "end_logits")


def distillation_loss(student_logits, teacher_logits, temperature=1.0):
    """Soft loss of student logits against teacher logits: temperature-scaled KL (times T^2, so its
    gradient scale does not depend on T) for classes, MSE for a single regression output."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"Student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ; the teacher must be fine-tuned on the same task.")
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits, teacher_logits)
    student = F.log_softmax(student_logits / temperature, dim=-1).flatten(0, -2)
    teacher = F.log_softmax(teacher_logits / temperature, dim=-1).flatten(0, -2)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * temperature**2


class DistillationTrainer(Trainer):
    """`Trainer` whose training loss is `alpha * soft + (1 - alpha) * hard`: the soft loss compares the
    student's logits (classes, or QA start/end) with a frozen fine-tuned teacher's on the same batch.
    Evaluation keeps the plain hard-label loss, so eval losses compare with and without a teacher."""

    # The loss is a per-batch mean: let Trainer divide it for gradient accumulation.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, teacher, alpha=0.5, temperature=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1]; got {alpha}.")
        if temperature <= 0:
            raise ValueError(f"distill_temperature must be positive; got {temperature}.")
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.alpha, self.temperature = alpha, temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        loss = outputs.loss
        if model.training:
            with torch.no_grad():
                teacher_outputs = self.teacher(**{k: v for k, v in inputs.items() if k not in self.label_names})
            fields = [name for name in LOGIT_FIELDS if outputs.get(name) is not None]
            soft = sum(distillation_loss(outputs[name], teacher_outputs[name], self.temperature) for name in fields)
            loss = self.alpha * soft / len(fields) + (1.0 - self.alpha) * loss
        return (loss, outputs) if return_outputs else loss


def load_teacher_model(path, auto_class, student):
    """The fine-tuned teacher; it must share the student's vocabulary and output size."""
    teacher = auto_class.from_pretrained(checked_model_path(path))
    if teacher.config.vocab_size != student.config.vocab_size:
        raise ValueError(
            f"Teacher {path} has vocab_size {teacher.config.vocab_size}, the student {student.config.vocab_size}: "
            "task distillation feeds both the same token ids, so they need the same tokenizer."
        )
    if teacher.config.num_labels != student.config.num_labels:
        raise ValueError(
            f"Teacher {path} has {teacher.config.num_labels} outputs, the task needs {student.config.num_labels}: "
            "pass a teacher fine-tuned on this task."
        )
    return teacher


def build_trainer(model, training_args, model_args, auto_class, **kwargs):
    """A `Trainer`, or a `DistillationTrainer` when `model_args.teacher_model` is set."""
    if model_args.teacher_model is None:
        return Trainer(model=model, args=training_args, **kwargs)
    teacher = load_teacher_model(model_args.teacher_model, auto_class, model)
    return DistillationTrainer(
        model=model, args=training_args, teacher=teacher,
        alpha=model_args.distill_alpha, temperature=model_args.distill_temperature, **kwargs,
    )


# ---------------------------------------------------------------------------------------------
# Shared steps
# ---------------------------------------------------------------------------------------------


def _first(dataset, count):
    return dataset if count is None else dataset.select(range(min(count, len(dataset))))


def _train(trainer, training_args, **counts):
    """Train (resuming if asked), save model + tokenizer into output_dir, write `train_results.json`."""
    result = trainer.train(resume_from_checkpoint=checked_model_path(training_args.resume_from_checkpoint))
    trainer.save_model()
    metrics = dict(result.metrics, **counts)
    if trainer.is_world_process_zero():
        write_json(Path(training_args.output_dir) / "train_results.json", metrics, sort_keys=True)
    return metrics


def _load_tokenizer(model_args):
    return AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)


# ---------------------------------------------------------------------------------------------
# GLUE
# ---------------------------------------------------------------------------------------------


def glue_compute_metrics(task):
    """`compute_metrics` for `Trainer`: logits -> class ids (or scores for STS-B) -> the task's metrics,
    scored by the packaged `evaluate` module `glue` (loaded once, offline)."""
    task = glue.get_task(task)
    metric = load_metric("glue", config_name=task.name)

    def compute(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.squeeze(logits, axis=-1) if task.is_regression else np.argmax(logits, axis=-1)
        return metric.compute(predictions=predicted, references=prediction.label_ids)

    return compute


def _split_prefix(split):
    # validation -> eval, validation_matched -> eval_matched, test_mismatched -> predict_mismatched
    return split.replace("validation", "eval").replace("test", "predict")


def checked_model_path(name_or_path):
    """A local model (or checkpoint) folder's weights must be complete safetensors, never pickles only
    (a clear error names a damaged file, instead of a loader traceback); Hub names, zoo names and
    None pass as they are."""
    if name_or_path is not None and Path(str(name_or_path)).is_dir():
        check_model_weights(name_or_path)
    return name_or_path


def load_glue_model(model_args, task):
    labels = {}
    if not task.is_regression:
        labels = {
            "id2label": dict(enumerate(task.label_names)),
            "label2id": {name: i for i, name in enumerate(task.label_names)},
        }
    model = AutoModelForSequenceClassification.from_pretrained(
        checked_model_path(model_args.model_name_or_path), num_labels=task.num_labels, **labels
    )
    return model


def glue_splits(task, training_args):
    """The splits a run needs: train (do_train), the dev set(s) (do_eval), the test set(s) (do_predict)."""
    splits = ["train"] if training_args.do_train else []
    splits += list(task.validation_splits) if training_args.do_eval else []
    splits += list(task.test_splits) if training_args.do_predict else []
    if not splits:
        raise ValueError("Nothing to do: set do_train, do_eval and/or do_predict.")
    return splits


def load_glue_datasets(task, splits, data_args, tokenizer):
    """Tokenised splits, each cut to its `max_*_samples` (validation_matched counts as validation)."""
    raw = glue.load_glue(task, data_args.data_dir, splits=splits)
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_predict_samples,
    }
    return {
        split: glue.tokenize_glue(
            _first(raw[split], limits[split.split("_")[0]]), task, tokenizer, data_args.max_seq_length
        )
        for split in splits
    }


def run_glue(model_args, data_args, training_args):
    """Fine-tune (`do_train`), evaluate on every dev set (`do_eval`; MNLI: matched and mismatched) and
    predict the test sets (`do_predict`, GLUE submission TSVs). Writes `eval_results.json` into
    `output_dir` and returns the evaluation metrics (`eval_<metric>`, `eval_mismatched_<metric>`, ...)."""
    task = glue.get_task(data_args.task_name)
    check_output_dir(training_args.output_dir, model_args, "glue", "ForSequenceClassification")
    tokenizer = _load_tokenizer(model_args)
    datasets = load_glue_datasets(task, glue_splits(task, training_args), data_args, tokenizer)
    set_seed(training_args.seed)  # before loading: the new classifier head is drawn from it
    model = load_glue_model(model_args, task)
    check_max_length(data_args.max_seq_length, model.config, "--max-seq-length")
    trainer = build_trainer(
        model, training_args, model_args, AutoModelForSequenceClassification,
        train_dataset=datasets.get("train"), processing_class=tokenizer, compute_metrics=glue_compute_metrics(task),
    )
    if training_args.do_train:
        _train(trainer, training_args, train_samples=len(datasets["train"]))
    output_dir = Path(training_args.output_dir)
    results = {"task": task.name, "model": str(model_args.model_name_or_path)}
    for split in task.validation_splits if training_args.do_eval else ():
        prefix = _split_prefix(split)
        metrics = trainer.evaluate(eval_dataset=datasets[split], metric_key_prefix=prefix)
        results.update(metrics, **{f"{prefix}_samples": len(datasets[split])})
    for split in task.test_splits if training_args.do_predict else ():
        path = output_dir / f"{_split_prefix(split)}_results_{task.name}.tsv"
        write_glue_predictions(trainer, task, datasets[split], path)
    if trainer.is_world_process_zero():
        write_json(output_dir / "eval_results.json", results, sort_keys=True)
    return results


def write_glue_predictions(trainer, task, dataset, path):
    """Predict `dataset` and write a GLUE submission TSV: `index<TAB>prediction` (label string or score)."""
    logits = trainer.predict(dataset.remove_columns("labels"), metric_key_prefix="predict").predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    if task.is_regression:
        values = [f"{score:.3f}" for score in np.squeeze(logits, axis=-1)]
    else:
        values = [task.labels[i] for i in np.argmax(logits, axis=-1)]
    if trainer.is_world_process_zero():
        rows = "".join(f"{index}\t{value}\n" for index, value in zip(dataset["idx"], values))
        atomic_write_text(path, "index\tprediction\n" + rows)


# ---------------------------------------------------------------------------------------------
# SQuAD
# ---------------------------------------------------------------------------------------------


def _squad_features(examples, prepare, tokenizer, data_args):
    return examples.map(
        prepare,
        batched=True,
        remove_columns=examples.column_names,
        fn_kwargs={
            "tokenizer": tokenizer, "max_seq_length": data_args.max_seq_length, "doc_stride": data_args.doc_stride
        },
        desc="SQuAD features",
    )


def evaluate_squad(trainer, examples, features, data_args):
    """Predict every window, merge windows into one answer per question, score with the official EM/F1
    (the packaged `evaluate` module `squad` or `squad_v2`). Returns `(metrics, predictions)`; metrics
    are prefixed `eval_`."""
    output = trainer.predict(features.remove_columns(["example_id", "offset_mapping"]), metric_key_prefix="eval")
    start_logits, end_logits = output.predictions[:2]
    predictions, _ = squad.postprocess_qa_predictions(
        examples, features, start_logits, end_logits,
        n_best_size=data_args.n_best_size, max_answer_length=data_args.max_answer_length,
        version_2_with_negative=data_args.version_2_with_negative,
        null_score_diff_threshold=data_args.null_score_diff_threshold,
    )
    metric = load_metric("squad_v2" if data_args.version_2_with_negative else "squad")
    scores = metric.compute(**squad.squad_metric_inputs(examples, predictions))
    metrics = {f"eval_{name}": value for name, value in scores.items()}
    metrics.update(eval_samples=len(examples), eval_features=len(features))
    timings = {name: value for name, value in output.metrics.items() if name.endswith(("_runtime", "_per_second"))}
    metrics.update(timings)
    return metrics, predictions


def run_squad(model_args, data_args, training_args):
    """Fine-tune on SQuAD (`do_train`) and score the dev set (`do_eval`). Writes `eval_results.json` and
    `eval_predictions.json` (question id -> answer) into `output_dir`; returns the evaluation metrics."""
    if training_args.eval_strategy != "no":
        raise ValueError(
            f"eval_strategy={training_args.eval_strategy!r}: SQuAD scores need post-processing, so they are "
            "computed once after training (do_eval); use eval_strategy='no'."
        )
    splits = [split for flag, split in (("do_train", "train"), ("do_eval", "validation")) if getattr(training_args, flag)]
    if not splits:
        raise ValueError("Nothing to do: set do_train and/or do_eval.")
    check_output_dir(training_args.output_dir, model_args, "squad", "ForQuestionAnswering")
    raw = squad.load_squad(
        data_args.version, data_args.data_dir, data_args.train_file, data_args.validation_file, splits=splits
    )
    tokenizer = _load_tokenizer(model_args)
    set_seed(training_args.seed)
    model = AutoModelForQuestionAnswering.from_pretrained(checked_model_path(model_args.model_name_or_path))
    check_max_length(data_args.max_seq_length, model.config, "--max-seq-length")
    train_features = None
    if training_args.do_train:
        train_examples = _first(raw["train"], data_args.max_train_samples)
        train_features = _squad_features(train_examples, squad.prepare_train_features, tokenizer, data_args)
    # Windows are padded to max_seq_length already: stack them as they are.
    trainer = build_trainer(
        model, training_args, model_args, AutoModelForQuestionAnswering,
        train_dataset=train_features, processing_class=tokenizer, data_collator=default_data_collator,
    )
    if training_args.do_train:
        _train(trainer, training_args, train_samples=len(train_examples), train_features=len(train_features))
    results = {"task": f"squad_v{data_args.version}", "model": str(model_args.model_name_or_path)}
    if training_args.do_eval:
        examples = _first(raw["validation"], data_args.max_eval_samples)
        features = _squad_features(examples, squad.prepare_validation_features, tokenizer, data_args)
        metrics, predictions = evaluate_squad(trainer, examples, features, data_args)
        results.update(metrics)
        if trainer.is_world_process_zero():
            write_json(Path(training_args.output_dir) / "eval_predictions.json", predictions, sort_keys=True)
    if trainer.is_world_process_zero():
        write_json(Path(training_args.output_dir) / "eval_results.json", results, sort_keys=True)
    return results
