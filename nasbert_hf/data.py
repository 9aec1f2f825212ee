"""Masked-language-model data: read a text corpus, tokenise, pack, split, batch and mask.

Corpus. `read_corpus` accepts a file, a folder, a glob or a list of those (`.txt` or
`.txt.gz`, one paragraph a line; blank lines separate documents and are dropped), or a
`datasets` Hub name (with a `text` column). Files are read with the `datasets` "text" builder,
so they are converted to Arrow once and memory-mapped afterwards. `DEFAULT_CORPUS` is a
~4.5 MB sample of English Wikipedia shipped with the package (see
`nasbert_hf/data/LICENSE-wiki-sample.md`).

Sequences. `build_mlm_datasets` tokenises with the teacher's (fast) tokenizer in batched
`datasets.map` calls, concatenates the token stream and cuts it into `seq_len - 2` token
pieces wrapped as `[CLS] ... [SEP]` (RoBERTa's "full sentences" packing: no padding, so no
compute is wasted), then holds out a random `validation_size` of the packed sequences. Every
step is cached by `datasets` under fingerprints derived from the corpus, the tokenizer's
vocabulary and the arguments, so a second call with the same inputs only memory-maps the
cache files. The packed sequences are disjoint spans of the corpus, so train and validation
share no text.

Masking. transformers' `DataCollatorForLanguageModeling(seed=...)` draws from one generator
whose state advances with every batch (and differs per dataloader worker), so the masks of a
batch depend on everything drawn before it: a run resumed at step k would not see the masks
of an uninterrupted one. `mlm_dataloader` therefore uses a small collator of its own that
draws the masks of each example from a `torch.Generator` seeded by (seed, epoch, example
index). The order of examples comes from `EpochSampler`, seeded by (seed, epoch). Batches
are thus a pure function of (seed, epoch, position): the same after a resume, with any number
of workers, and when Accelerate shards the batches over processes (Accelerate calls the
sampler's `set_epoch` at every epoch). Masking follows BERT: each non-special token is chosen
with probability `mlm_probability`; a chosen token becomes `[MASK]` 80% of the time, a
uniformly random token 10%, and stays unchanged 10%; `labels` holds the original id at chosen
positions and -100 elsewhere. With `mlm_probability=0` the text is left as it is (labels all
-100): the hidden-state losses of the supernet stage and of distillation without an MLM term
compare teacher and student on the text itself, and 15% of `[MASK]` and random tokens there
cost the students about 2 points of the teacher's sentence geometry at 15M and 6 at 5M
(docs/distillation.md).
"""

import codecs
import glob
import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import torch
from datasets.fingerprint import Hasher
from torch.utils.data import DataLoader, Sampler

from .training import derive_seed

DEFAULT_CORPUS = str(Path(__file__).resolve().parent / "data" / "wiki-sample.txt.gz")

TEXT_SUFFIXES = (".txt", ".txt.gz")
# Bytes of each corpus file checked for text before `datasets` reads it.
PROBE_BYTES = 1 << 20
GLOB_CHARACTERS = set("*?[")
COLUMNS = ["input_ids", "attention_mask", "token_type_ids"]
# Bump when the tokenise/pack steps change, so that stale cache files are not reused.
PIPELINE_VERSION = "2"
# Compact storage: token ids fit int32, the constant mask and segment columns int8 (a third of
# the default int64 size on disk); the collator returns int64 tensors.
TOKEN_FEATURES = datasets.Features({"tokens": datasets.List(datasets.Value("int32"))})
PACKED_FEATURES = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),
        "attention_mask": datasets.List(datasets.Value("int8")),
        "token_type_ids": datasets.List(datasets.Value("int8")),
    }
)


# ---------------------------------------------------------------------------------------------
# Corpus


def read_corpus(corpus, cache_dir=None) -> datasets.Dataset:
    """The corpus as a `datasets.Dataset` with one column `text` (one paragraph a row, no blank rows).

    `corpus`: a `.txt`/`.txt.gz` file, a folder of them, a glob, a list of those, or a Hub
    dataset name. Raises `FileNotFoundError` when a path matches no file, `ValueError` when
    the corpus holds no text.
    """
    items = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus)
    if not items:
        raise ValueError("corpus is an empty list: give at least one file, folder, glob or Hub dataset name")
    if len(items) == 1 and _is_hub_name(items[0]):
        return _read_hub_dataset(str(items[0]), cache_dir)
    files = [file for item in items for file in _corpus_files(item)]
    # Checked before `datasets` is called: it fails on an empty or undecodable file with a
    # generation traceback that does not say which file.
    if not any([_check_text_file(file) for file in files]):
        raise ValueError(f"corpus {_describe(corpus)} holds no text (its files are empty)")
    try:
        dataset = datasets.load_dataset("text", data_files=files, split="train", cache_dir=cache_dir)
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, UnicodeDecodeError):  # past the bytes `_check_text_file` reads
            raise ValueError(f"corpus {_describe(corpus)} is not UTF-8 text ({error.__cause__})") from error
        raise
    dataset = dataset.filter(_is_not_blank, batched=True, desc="Dropping blank lines")
    if len(dataset) == 0:
        raise ValueError(f"corpus {_describe(corpus)} holds no text (only empty or blank lines)")
    return dataset


def _corpus_files(item) -> list[str]:
    """The text files that one corpus item (file, folder or glob) stands for, in name order."""
    text = str(item)
    if not text.strip():
        raise FileNotFoundError("corpus path is an empty string: give a .txt/.txt.gz file, folder, glob or Hub name")
    path = Path(text).expanduser()
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(str(file) for file in path.iterdir() if file.name.endswith(TEXT_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"corpus folder {path} has no {' or '.join(TEXT_SUFFIXES)} files")
        return files
    if GLOB_CHARACTERS & set(text):
        files = sorted(file for file in glob.glob(os.path.expanduser(text)) if os.path.isfile(file))
        if not files:
            raise FileNotFoundError(f"corpus glob {text!r} matches no file")
        return files
    raise FileNotFoundError(f"corpus file {text!r} does not exist (expected a .txt/.txt.gz file, folder or glob)")


def open_corpus_file(path, mode="rt"):
    """A corpus file opened in `mode`, gunzipped when its name ends in `.gz` (text modes: UTF-8)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    return opener(path, mode, encoding="utf-8") if "t" in mode else opener(path, mode)


def _check_text_file(path) -> bool:
    """Whether the file holds any bytes (after gunzip); `ValueError` naming it when it is not UTF-8
    text: binary (NUL bytes), undecodable, or a `.gz` that is not gzip. The first `PROBE_BYTES` are
    checked, so that a large corpus is not read twice."""
    try:
        with open_corpus_file(path, "rb") as handle:
            head = handle.read(PROBE_BYTES)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"corpus file {str(path)!r} is not a readable gzip file ({error})") from error
    if b"\0" in head:
        raise ValueError(f"corpus file {str(path)!r} is binary, not text (it holds NUL bytes)")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < PROBE_BYTES)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"corpus file {str(path)!r} is not UTF-8 text (byte {error.start}: {head[error.start:error.start + 1]!r}); "
            "convert it first, e.g. `iconv -f latin1 -t utf-8`"
        ) from error
    return bool(head)


def _is_hub_name(item) -> bool:
    """`owner/name` or `name` that is not a local path, glob or text file name."""
    text = str(item)
    return (
        not isinstance(item, os.PathLike)
        and not Path(text).expanduser().exists()
        and not text.startswith((".", "/", "~"))
        and text.count("/") <= 1
        and not GLOB_CHARACTERS & set(text)
        and not text.endswith(TEXT_SUFFIXES)
    )


def _read_hub_dataset(name: str, cache_dir) -> datasets.Dataset:
    """Train split of a Hub dataset. With `HF_HUB_OFFLINE=1` it is read from the local cache."""
    try:
        if not datasets.config.HF_HUB_OFFLINE:
            # One quick request first: `load_dataset` retries for ~20 s before failing when offline.
            huggingface_hub.dataset_info(name)
        dataset = datasets.load_dataset(name, split="train", cache_dir=cache_dir)
    except Exception as error:  # offline or unknown name: for the caller this is a missing corpus
        raise FileNotFoundError(
            f"corpus {name!r} is not a local file, folder or glob, and not a loadable Hub dataset "
            f"({type(error).__name__}: {error}); to use a cached Hub dataset offline, set HF_HUB_OFFLINE=1"
        ) from error
    if "text" not in dataset.column_names:
        raise ValueError(f"Hub dataset {name!r} has no 'text' column (columns: {dataset.column_names})")
    dataset = dataset.select_columns(["text"]).filter(_is_not_blank, batched=True, desc="Dropping blank lines")
    if len(dataset) == 0:
        raise ValueError(f"Hub dataset {name!r} holds no text")
    return dataset


def _is_not_blank(batch):
    return [bool(text and text.strip()) for text in batch["text"]]


def _describe(corpus) -> str:
    return repr(str(corpus)) if isinstance(corpus, (str, os.PathLike)) else repr([str(item) for item in corpus])


# ---------------------------------------------------------------------------------------------
# Tokenise, pack, split


def build_mlm_datasets(
    corpus,
    tokenizer,
    seq_len=128,
    validation_size=0.05,
    seed=0,
    max_train_sequences=None,
    cache_dir=None,
) -> datasets.DatasetDict:
    """Packed `[CLS] ... [SEP]` sequences of `seq_len` tokens, split into `train` and `validation`.

    Columns `input_ids`, `attention_mask` (all ones), `token_type_ids` (all zeros).
    `validation_size` is a fraction in (0, 1) or a number of sequences; `max_train_sequences`
    caps the training split (after the split, so validation does not change with it).
    """
    if seq_len < 3:
        raise ValueError(f"seq_len={seq_len} is too short: need at least 3 ([CLS], one token, [SEP])")
    _check_special_tokens(tokenizer)
    raw = read_corpus(corpus, cache_dir=cache_dir)
    tokens_fingerprint = Hasher.hash([raw._fingerprint, _tokenizer_fingerprint(tokenizer), PIPELINE_VERSION])
    tokens = raw.map(
        _tokenize,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer},
        remove_columns=raw.column_names,
        features=TOKEN_FEATURES,
        new_fingerprint=tokens_fingerprint,
        desc="Tokenising",
    )
    packed = tokens.map(
        _pack,
        batched=True,
        batch_size=1000,
        fn_kwargs={"seq_len": seq_len, "cls_id": tokenizer.cls_token_id, "sep_id": tokenizer.sep_token_id},
        remove_columns=tokens.column_names,
        features=PACKED_FEATURES,
        new_fingerprint=Hasher.hash([tokens_fingerprint, "pack", seq_len]),
        desc=f"Packing into {seq_len}-token sequences",
    )
    _check_split_sizes(corpus, len(packed), validation_size)
    splits = packed.train_test_split(test_size=validation_size, seed=seed)
    train = splits["train"]
    if max_train_sequences is not None:
        train = train.select(range(min(int(max_train_sequences), len(train))))
    return datasets.DatasetDict({"train": train, "validation": splits["test"]})


def _check_special_tokens(tokenizer):
    missing = [name for name in ("cls_token", "sep_token", "mask_token") if getattr(tokenizer, name + "_id") is None]
    if missing:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no {', '.join(missing)}: MLM data needs all three")


def _tokenizer_fingerprint(tokenizer) -> str:
    """A stable hash of what the tokenizer does (its serialised form for fast tokenizers).

    The backend's truncation/padding settings are left out: calling the tokenizer changes them,
    which would otherwise change the hash (and miss the cache) after the first call.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
    else:
        state = sorted(tokenizer.get_vocab().items())
    return Hasher.hash([type(tokenizer).__name__, state, tokenizer.cls_token_id, tokenizer.sep_token_id])


def _tokenize(batch, tokenizer):
    # Paragraphs are longer than the model's maximum length on purpose: packing cuts them, so
    # `verbose=False` silences the "sequence length is longer than" warning.
    encoded = tokenizer(
        batch["text"],
        add_special_tokens=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    return {"tokens": encoded["input_ids"]}


def _pack(batch, seq_len, cls_id, sep_id):
    """Concatenate the batch's token lists and cut them into `[CLS] piece [SEP]` rows.

    The tail shorter than one piece is dropped (at most `seq_len - 3` tokens per 1000 paragraphs).
    """
    stream = [token for tokens in batch["tokens"] for token in tokens]
    piece = seq_len - 2
    rows = [[cls_id, *stream[start : start + piece], sep_id] for start in range(0, len(stream) - piece + 1, piece)]
    return {
        "input_ids": rows,
        "attention_mask": [[1] * seq_len for _ in rows],
        "token_type_ids": [[0] * seq_len for _ in rows],
    }


def _check_split_sizes(corpus, total, validation_size):
    if isinstance(validation_size, float):
        if not 0.0 < validation_size < 1.0:
            raise ValueError(f"validation_size={validation_size} must be a fraction in (0, 1) or a number of sequences")
        held_out = int(np.ceil(total * validation_size))
    else:
        held_out = int(validation_size)
    if not 1 <= held_out < total:
        raise ValueError(
            f"corpus {_describe(corpus)} packs into {total} sequences, too few for validation_size={validation_size}: "
            "need at least one sequence in each split (use a larger corpus or a shorter seq_len)"
        )


# ---------------------------------------------------------------------------------------------
# Batches and masking


class EpochSampler(Sampler):
    """Indices of a dataset in an order fixed by (seed, epoch), yielded as `(epoch, index)` keys.

    The epoch travels with each key so that the collator can seed the masks of each example
    without shared state. `set_epoch` is called by Accelerate (or by the training loop).
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0):
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.size

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = range(self.size)
        return iter([(self.epoch, index) for index in order])


class _KeyedDataset(torch.utils.data.Dataset):
    """Looks up `(epoch, index)` keys and keeps them with the row for the collator."""

    def __init__(self, dataset):
        self.dataset = dataset.with_format("torch", columns=COLUMNS)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        return {"epoch": epoch, "index": index, **self.dataset[index]}


MLM_PROBABILITY = 0.15  # BERT's masking rate


def masking_rate(masked):
    """The `mlm_probability` of batches that are BERT-masked (`masked`) or the text as it is."""
    return MLM_PROBABILITY if masked else 0.0


@dataclass
class MLMCollator:
    """Stacks rows and masks each example with a generator seeded by (seed, epoch, index)."""

    mask_token_id: int
    vocab_size: int
    special_token_ids: tuple
    seed: int = 0
    mlm_probability: float = MLM_PROBABILITY

    def __post_init__(self):
        self._special = torch.tensor(self.special_token_ids, dtype=torch.long)

    def __call__(self, rows):
        batch = {name: torch.stack([row[name] for row in rows]).long() for name in COLUMNS}
        masked, labels = zip(
            *(self.mask(row["input_ids"], row["attention_mask"], row["epoch"], row["index"]) for row in rows)
        )
        batch["input_ids"], batch["labels"] = torch.stack(masked), torch.stack(labels)
        return batch

    def mask(self, input_ids, attention_mask, epoch, index):
        """BERT masking of one example: (masked ids, labels with -100 at unmasked positions)."""
        input_ids = input_ids.long()
        if self.mlm_probability == 0:
            return input_ids, torch.full_like(input_ids, -100)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, index))
        maskable = attention_mask.bool() & ~torch.isin(input_ids, self._special)
        chosen = (torch.rand(input_ids.shape, generator=generator) < self.mlm_probability) & maskable
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
        draw = torch.rand(input_ids.shape, generator=generator)  # 80% [MASK], 10% random, 10% unchanged
        random_ids = torch.randint(self.vocab_size, input_ids.shape, generator=generator)
        masked = torch.where(chosen & (draw < 0.8), torch.full_like(input_ids, self.mask_token_id), input_ids)
        masked = torch.where(chosen & (draw >= 0.8) & (draw < 0.9), random_ids, masked)
        return masked, labels


def mlm_dataloader(dataset, tokenizer, batch_size, shuffle=True, seed=0, mlm_probability=MLM_PROBABILITY) -> DataLoader:
    """Batches of `input_ids` (BERT-masked; unmasked with `mlm_probability=0`), `attention_mask`,
    `token_type_ids` and `labels`.

    Order and masks are a function of (seed, epoch): call `loader.sampler.set_epoch(epoch)`
    before each epoch (Accelerate's prepared loaders do it themselves).
    """
    if not 0.0 <= mlm_probability < 1.0:
        raise ValueError(f"mlm_probability={mlm_probability} must be in [0, 1) (0: no masking)")
    _check_special_tokens(tokenizer)
    collator = MLMCollator(
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        special_token_ids=tuple(sorted(set(tokenizer.all_special_ids))),
        seed=seed,
        mlm_probability=mlm_probability,
    )
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed)
    return DataLoader(_KeyedDataset(dataset), batch_size=batch_size, sampler=sampler, collate_fn=collator)
