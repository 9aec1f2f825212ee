"""GLUE: the nine tasks, their official TSV layouts, a strict reader and tokenisation.

Every split of every task becomes a `datasets.Dataset` with the same columns: `sentence1`,
`sentence2` (pair tasks only), `label` (class id, or the similarity score for STS-B; -1 on
unlabelled test rows, as the Hub's `nyu-mll/glue` has it) and `idx`. Local files follow the
official GLUE download layout (`CoLA/train.tsv`, `MNLI/dev_matched.tsv`, ...); without a local
folder the same splits come from the Hub dataset `nyu-mll/glue`.
"""

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Value

from .metrics import GLUE_METRICS

HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its files are, which TSV columns hold what, its labels and metrics."""

    name: str  # short name, also the Hub config: "cola", "sst2", ...
    folder: str  # folder in the GLUE download: "CoLA", "SST-2", ...
    text_columns: tuple  # TSV header names of the one or two texts
    label_column: str | None  # TSV header name of the label (train/dev)
    labels: tuple | None  # label strings as written in the TSV, in class-id order; None = regression
    label_names: tuple | None  # readable names of those classes (the Hub's ClassLabel names)
    hub_text_columns: tuple  # the same texts' column names on the Hub
    splits: tuple = (("train", "train.tsv"), ("validation", "dev.tsv"), ("test", "test.tsv"))
    index_column: str = "index"  # the id column of test files
    headerless_columns: tuple | None = None  # column names of header-less train/dev files (CoLA)

    @property
    def is_regression(self):
        return self.labels is None

    @property
    def num_labels(self):
        return 1 if self.is_regression else len(self.labels)

    @property
    def is_pair(self):
        return len(self.text_columns) == 2

    @property
    def metrics(self):
        return GLUE_METRICS[self.name]

    @property
    def validation_splits(self):
        return tuple(split for split, _ in self.splits if split.startswith("validation"))

    @property
    def test_splits(self):
        return tuple(split for split, _ in self.splits if split.startswith("test"))

    def split_file(self, split):
        files = dict(self.splits)
        if split not in files:
            raise ValueError(f"GLUE task {self.name!r} has no split {split!r}; valid: {', '.join(files)}.")
        return files[split]


_MNLI_SPLITS = (
    ("train", "train.tsv"),
    ("validation_matched", "dev_matched.tsv"),
    ("validation_mismatched", "dev_mismatched.tsv"),
    ("test_matched", "test_matched.tsv"),
    ("test_mismatched", "test_mismatched.tsv"),
)
_BINARY = ("0", "1")
_ENTAILMENT = ("entailment", "not_entailment")

GLUE_TASKS = {
    task.name: task
    for task in (
        # CoLA's train/dev files have no header: source, label, the original author's mark, sentence.
        GlueTask("cola", "CoLA", ("sentence",), "label", _BINARY, ("unacceptable", "acceptable"), ("sentence",),
                 headerless_columns=("source", "label", "author_label", "sentence")),
        GlueTask("sst2", "SST-2", ("sentence",), "label", _BINARY, ("negative", "positive"), ("sentence",)),
        GlueTask("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", _BINARY, ("not_equivalent", "equivalent"),
                 ("sentence1", "sentence2")),
        GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), "score", None, None, ("sentence1", "sentence2")),
        GlueTask("qqp", "QQP", ("question1", "question2"), "is_duplicate", _BINARY, ("not_duplicate", "duplicate"),
                 ("question1", "question2"), index_column="id"),
        # Class ids follow the Hub's ClassLabel order so local and Hub data agree.
        GlueTask("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction"),
                 ("entailment", "neutral", "contradiction"), ("premise", "hypothesis"), splits=_MNLI_SPLITS),
        GlueTask("qnli", "QNLI", ("question", "sentence"), "label", _ENTAILMENT, _ENTAILMENT, ("question", "sentence")),
        GlueTask("rte", "RTE", ("sentence1", "sentence2"), "label", _ENTAILMENT, _ENTAILMENT,
                 ("sentence1", "sentence2")),
        GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), "label", _BINARY, ("not_entailment", "entailment"),
                 ("sentence1", "sentence2")),
    )
}


def get_task(name):
    """The `GlueTask` called `name`; case, `-` and `_` are ignored, so `SST-2`, `sst2` and `STS_B` work."""
    if isinstance(name, GlueTask):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"Unknown GLUE task {name!r}; valid: {', '.join(GLUE_TASKS)}.")
    return GLUE_TASKS[key]


def _features(task):
    columns = {f"sentence{i + 1}": Value("string") for i in range(len(task.text_columns))}
    columns["label"] = Value("float32" if task.is_regression else "int64")
    columns["idx"] = Value("int64")
    return Features(columns)


def _parse_label(task, text, where):
    if task.is_regression:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{where}: STS-B score {text!r} is not a number.") from None
    if text not in task.labels:
        raise ValueError(f"{where}: label {text!r} is not one of {', '.join(task.labels)} ({task.name}).")
    return task.labels.index(text)


def read_glue_file(task, path, split="train"):
    """Read one official GLUE TSV into a `Dataset` (columns `sentence1`, [`sentence2`], `label`, `idx`).

    Fields are split on tabs only: GLUE text is unquoted and holds quote characters. Test files
    (`split` starting with "test") have no labels; their rows get label -1. A row with the wrong
    number of fields, an unknown label, a bad score or a byte that is not UTF-8 raises `ValueError`
    naming the file and line; so does a file without data rows.
    """
    task, path = get_task(task), Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GLUE {task.name} {split} file not found: {path}")
    labelled = not split.startswith("test")
    rows = {name: [] for name in _features(task)}
    with path.open("rb") as handle:
        lines = _text_lines(handle, path)
        if task.headerless_columns and labelled:
            header = task.headerless_columns
        else:
            _, first = next(lines, (1, ""))
            header = tuple(first.rstrip("\r\n").split("\t"))
        wanted = list(task.text_columns) + ([task.label_column] if labelled else [])
        missing = [column for column in wanted if column not in header]
        if missing:
            raise ValueError(f"{path}:1: header {list(header)} lacks column(s) {missing} of GLUE {task.name} {split}.")
        positions = [header.index(column) for column in wanted]
        index_position = header.index(task.index_column) if task.index_column in header else None
        for line_number, line in lines:
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            where = f"{path}:{line_number}"
            if len(fields) != len(header):
                raise ValueError(
                    f"{where}: expected {len(header)} tab-separated fields {list(header)}, got {len(fields)}."
                )
            for i, position in enumerate(positions[: len(task.text_columns)]):
                rows[f"sentence{i + 1}"].append(fields[position])
            rows["label"].append(_parse_label(task, fields[positions[-1]], where) if labelled else -1)
            rows["idx"].append(_parse_index(fields, index_position, len(rows["idx"]), where))
    if not rows["idx"]:  # an empty split would train or evaluate on nothing and report no metric
        raise ValueError(f"{path}: GLUE {task.name} {split} file has no data rows (only a header, or nothing).")
    return Dataset.from_dict(rows, features=_features(task))


def _text_lines(handle, path):
    """`(line number, text)` of a binary file's lines, decoded one by one, so that a byte that is not
    UTF-8 (a Latin-1 file, say) raises `ValueError` naming the file and the line. The first line
    is read as utf-8-sig, which drops the byte-order mark that starts MRPC's files."""
    for number, line in enumerate(handle, start=1):
        try:
            yield number, line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{path}:{number}: not UTF-8 text (byte {line[error.start]:#04x} at offset {error.start} of the "
                "line); save the file as UTF-8."
            ) from None


def _parse_index(fields, position, row_number, where):
    if position is None:  # train/dev files without an id column: number the rows
        return row_number
    try:
        return int(fields[position])
    except ValueError:
        raise ValueError(f"{where}: row id {fields[position]!r} is not an integer.") from None


def task_folder(task, data_dir):
    """The folder holding `task`'s TSVs: `data_dir/<Folder>` (GLUE download root) or `data_dir` itself."""
    task, data_dir = get_task(task), Path(data_dir)
    if (data_dir / task.folder).is_dir():
        return data_dir / task.folder
    if any((data_dir / name).is_file() for _, name in task.splits):
        return data_dir
    raise FileNotFoundError(
        f"No GLUE {task.name} data in {data_dir}: expected {data_dir / task.folder}/ or its "
        f"{', '.join(name for _, name in task.splits)} directly there."
    )


def load_glue_split(task, split, data_dir=None):
    """One split of `task` from a local GLUE folder, or from the Hub (`nyu-mll/glue`) when `data_dir` is None."""
    task = get_task(task)
    file_name = task.split_file(split)
    if data_dir is not None:
        return read_glue_file(task, task_folder(task, data_dir) / file_name, split)
    from datasets import load_dataset

    dataset = load_dataset(HUB_DATASET, task.name, split=split)
    renames = {hub: f"sentence{i + 1}" for i, hub in enumerate(task.hub_text_columns) if hub != f"sentence{i + 1}"}
    return dataset.rename_columns(renames).cast(_features(task))


def load_glue(task, data_dir=None, splits=None):
    """A `DatasetDict` of `task`'s splits; locally, the splits whose files exist (default: all of them)."""
    task = get_task(task)
    if splits is None:
        folder = None if data_dir is None else task_folder(task, data_dir)
        splits = [split for split, name in task.splits if folder is None or (folder / name).is_file()]
    return DatasetDict({split: load_glue_split(task, split, data_dir) for split in splits})


def tokenize_glue(dataset, task, tokenizer, max_seq_length=128):
    """Tokenise the text column(s) (truncated to `max_seq_length`, unpadded: the collator pads per batch).

    Keeps `label` (renamed `labels`, float for STS-B) and `idx`; drops the raw text.
    """
    task = get_task(task)
    text_columns = [f"sentence{i + 1}" for i in range(len(task.text_columns))]

    def encode(batch):
        return tokenizer(*(batch[column] for column in text_columns), truncation=True, max_length=max_seq_length)

    encoded = dataset.map(encode, batched=True, remove_columns=text_columns, desc=f"Tokenising {task.name}")
    return encoded.rename_column("label", "labels")
