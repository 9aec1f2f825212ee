import gzip
import math
import os

import datasets
import pytest
import torch
from accelerate.data_loader import prepare_data_loader, skip_first_batches
from transformers import AutoTokenizer

from nasbert_hf.data import DEFAULT_CORPUS, build_mlm_datasets, mlm_dataloader, read_corpus
from nasbert_hf.teacher import DEFAULT_TEACHER

SEQ_LEN = 64
PARAGRAPHS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Wikipedia is a free online encyclopedia written collaboratively by volunteers.",
    "",
    "A second document starts after the blank line that separates documents.",
    "   ",
    "It has two paragraphs, and the blank-looking line above holds only spaces.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(DEFAULT_TEACHER)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets-cache"))


@pytest.fixture(scope="module")
def mlm_data(tokenizer, cache_dir):
    return build_mlm_datasets(DEFAULT_CORPUS, tokenizer, seq_len=SEQ_LEN, cache_dir=cache_dir)


def _write(path, lines, compress=False):
    text = "\n".join(lines) + "\n"
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _ids(split):
    return split[:]["input_ids"]


def _expected_paragraphs(lines):
    return [line for line in lines if line.strip()]


# --- read_corpus -----------------------------------------------------------------------------


def test_default_corpus_is_the_embedded_wikipedia_sample(tmp_path):
    assert DEFAULT_CORPUS.endswith("wiki-sample.txt.gz") and os.path.isfile(DEFAULT_CORPUS)
    assert os.path.getsize(DEFAULT_CORPUS) < 5 * 2**20
    assert os.path.isfile(os.path.join(os.path.dirname(DEFAULT_CORPUS), "LICENSE-wiki-sample.md"))
    corpus = read_corpus(DEFAULT_CORPUS, cache_dir=str(tmp_path))
    with gzip.open(DEFAULT_CORPUS, "rt", encoding="utf-8") as handle:
        expected = _expected_paragraphs(handle.read().split("\n"))
    assert corpus.column_names == ["text"]
    assert len(corpus) == len(expected) > 10_000
    assert corpus[0]["text"] == expected[0] and corpus[-1]["text"] == expected[-1]


@pytest.mark.parametrize("compress", [False, True])
def test_plain_and_gzip_files_read_the_same_paragraphs(tmp_path, compress):
    path = _write(tmp_path / ("corpus.txt.gz" if compress else "corpus.txt"), PARAGRAPHS, compress)
    corpus = read_corpus(str(path), cache_dir=str(tmp_path / "cache"))
    assert corpus[:]["text"] == _expected_paragraphs(PARAGRAPHS)


def test_folder_glob_and_list_inputs(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    _write(folder / "a.txt", PARAGRAPHS[:2])
    _write(folder / "b.txt.gz", PARAGRAPHS[3:], compress=True)
    _write(folder / "notes.md", ["not part of the corpus"])
    cache = str(tmp_path / "cache")
    expected = _expected_paragraphs(PARAGRAPHS)
    assert read_corpus(folder, cache_dir=cache)[:]["text"] == expected
    assert read_corpus(str(folder / "*.txt*"), cache_dir=cache)[:]["text"] == expected
    listed = read_corpus([folder / "b.txt.gz", str(folder / "a.*")], cache_dir=cache)
    assert listed[:]["text"] == expected[2:] + expected[:2]


def test_shared_wikipedia_shard_by_glob(shared_data, tmp_path):
    pattern = str(shared_data / "wiki" / "wiki-01[0].txt.gz")
    corpus = read_corpus(pattern, cache_dir=str(tmp_path))
    with gzip.open(shared_data / "wiki" / "wiki-010.txt.gz", "rt", encoding="utf-8") as handle:
        expected = _expected_paragraphs(handle.read().split("\n"))
    assert len(corpus) == len(expected) > 1000
    assert corpus[1000]["text"] == expected[1000]


@pytest.mark.parametrize("name", ["missing.txt", "missing-folder/", "no-match-*.txt.gz"])
def test_missing_corpus_raises_file_not_found(tmp_path, name):
    path = str(tmp_path / name)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_corpus(path)


def test_folder_without_text_files_raises(tmp_path):
    (tmp_path / "readme.md").write_text("nothing to read")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_corpus(tmp_path)


def test_empty_corpus_raises_value_error(tmp_path):
    path = _write(tmp_path / "empty.txt", ["", "   ", ""])
    with pytest.raises(ValueError, match="empty.txt"):
        read_corpus(path, cache_dir=str(tmp_path / "cache"))


def _no_datasets(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("datasets.load_dataset was called")

    monkeypatch.setattr(datasets, "load_dataset", fail)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", b"", "holds no text"),
        ("binary.txt", bytes(range(256)) * 4, "binary.txt' is binary, not text"),
        ("latin.txt", "Café au lait, naïve façade.\n".encode("latin-1"), "latin.txt' is not UTF-8 text"),
        ("broken.txt.gz", b"not gzip at all", "broken.txt.gz' is not a readable gzip file"),
        ("empty.txt.gz", gzip.compress(b""), "holds no text"),
    ],
)
def test_files_that_are_not_text_are_named_before_datasets_reads_them(tmp_path, monkeypatch, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    _no_datasets(monkeypatch)
    with pytest.raises(ValueError, match=message) as error:
        read_corpus(path)
    assert name in str(error.value)


def test_an_empty_file_beside_text_is_fine_and_a_bad_one_is_named(tmp_path, monkeypatch):
    _write(tmp_path / "a.txt", PARAGRAPHS)
    (tmp_path / "b.txt").write_bytes(b"")
    assert len(read_corpus(tmp_path, cache_dir=str(tmp_path / "cache"))) == len(_expected_paragraphs(PARAGRAPHS))
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe\x00 utf-16?")
    _no_datasets(monkeypatch)
    with pytest.raises(ValueError, match="c.txt"):
        read_corpus(tmp_path)


def test_unknown_hub_dataset_raises_when_offline(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="nasbert-test/no-such-corpus"):
        read_corpus("nasbert-test/no-such-corpus")


# --- build_mlm_datasets ----------------------------------------------------------------------


def test_packed_sequences_have_fixed_length_and_special_tokens(mlm_data, tokenizer):
    assert set(mlm_data) == {"train", "validation"}
    for split in mlm_data.values():
        assert split.column_names == ["input_ids", "attention_mask", "token_type_ids"]
        ids = torch.tensor(_ids(split))
        assert ids.shape[1] == SEQ_LEN
        assert (ids[:, 0] == tokenizer.cls_token_id).all() and (ids[:, -1] == tokenizer.sep_token_id).all()
        inner = ids[:, 1:-1]
        for name in ("cls_token_id", "sep_token_id", "pad_token_id", "mask_token_id"):
            special = getattr(tokenizer, name)
            assert not (inner == special).any(), tokenizer.convert_ids_to_tokens(special)
        assert (torch.tensor(split[:]["attention_mask"]) == 1).all()
        assert (torch.tensor(split[:]["token_type_ids"]) == 0).all()


def test_validation_split_is_held_out_and_disjoint(mlm_data):
    train = {tuple(row) for row in _ids(mlm_data["train"])}
    validation = {tuple(row) for row in _ids(mlm_data["validation"])}
    total = len(mlm_data["train"]) + len(mlm_data["validation"])
    assert len(mlm_data["validation"]) == math.ceil(0.05 * total)
    assert len(validation) == len(mlm_data["validation"])
    assert not train & validation


def test_packing_keeps_the_token_stream(tmp_path, tokenizer):
    lines = [f"Paragraph {i} talks about the history of the number {i * 7}." for i in range(40)]
    path = _write(tmp_path / "numbers.txt", lines)
    data = build_mlm_datasets(str(path), tokenizer, seq_len=16, validation_size=2, cache_dir=str(tmp_path / "c"))
    stream = [token for line in lines for token in tokenizer(line, add_special_tokens=False)["input_ids"]]
    rows = _ids(data["train"]) + _ids(data["validation"])
    assert len(rows) == len(stream) // 14 and len(data["validation"]) == 2
    # Rows are consecutive 14-token pieces of the stream (then shuffled by the split).
    pieces = {tuple(stream[start : start + 14]) for start in range(0, len(rows) * 14, 14)}
    assert {tuple(row[1:-1]) for row in rows} == pieces


def test_split_is_seeded_and_train_cap_leaves_validation_alone(tokenizer, cache_dir, mlm_data):
    same = build_mlm_datasets(DEFAULT_CORPUS, tokenizer, seq_len=SEQ_LEN, cache_dir=cache_dir)
    other = build_mlm_datasets(DEFAULT_CORPUS, tokenizer, seq_len=SEQ_LEN, seed=1, cache_dir=cache_dir)
    capped = build_mlm_datasets(
        DEFAULT_CORPUS, tokenizer, seq_len=SEQ_LEN, max_train_sequences=100, cache_dir=cache_dir
    )
    assert _ids(same["validation"]) == _ids(mlm_data["validation"])
    assert _ids(other["validation"]) != _ids(mlm_data["validation"])
    assert len(capped["train"]) == 100
    assert _ids(capped["train"]) == _ids(mlm_data["train"])[:100]
    assert _ids(capped["validation"]) == _ids(mlm_data["validation"])


def test_second_call_is_served_from_the_cache(tmp_path, tokenizer):
    lines = _write(tmp_path / "corpus.txt", PARAGRAPHS * 20)
    cache = tmp_path / "cache"
    first = build_mlm_datasets(str(lines), tokenizer, seq_len=16, validation_size=3, cache_dir=str(cache))
    files = sorted(str(path) for path in cache.rglob("*.arrow"))
    tokenizer("calling the tokenizer with other settings", truncation=True, max_length=4, padding="max_length")
    second = build_mlm_datasets(str(lines), tokenizer, seq_len=16, validation_size=3, cache_dir=str(cache))
    assert sorted(str(path) for path in cache.rglob("*.arrow")) == files  # nothing recomputed
    assert second["train"].cache_files == first["train"].cache_files
    assert all(file["filename"].startswith(str(cache)) for file in second["train"].cache_files)
    assert _ids(second["train"]) == _ids(first["train"])


def test_corpus_too_small_for_a_validation_split_raises(tmp_path, tokenizer):
    path = _write(tmp_path / "tiny.txt", ["Just a few words here."])
    with pytest.raises(ValueError, match="tiny.txt.*packs into 1 sequences"):
        build_mlm_datasets(str(path), tokenizer, seq_len=8, cache_dir=str(tmp_path / "cache"))


# --- mlm_dataloader --------------------------------------------------------------------------


def _batches(loader, epoch=0, count=None):
    loader.sampler.set_epoch(epoch)
    batches = []
    for batch in loader:
        batches.append(batch)
        if count is not None and len(batches) == count:
            break
    return batches


def test_batches_have_mlm_columns_and_labels_hold_the_original_tokens(mlm_data, tokenizer):
    dataset = mlm_data["validation"]
    loader = mlm_dataloader(dataset, tokenizer, batch_size=32, shuffle=False)
    batches = _batches(loader)
    assert sum(len(batch["input_ids"]) for batch in batches) == len(dataset)
    batch = batches[0]
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert all(tensor.shape == (32, SEQ_LEN) and tensor.dtype == torch.long for tensor in batch.values())
    original = torch.tensor(dataset[:32]["input_ids"])
    chosen = batch["labels"] != -100
    assert torch.equal(batch["labels"][chosen], original[chosen])
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])
    # [CLS] and [SEP] are never masked.
    assert not chosen[:, 0].any() and not chosen[:, -1].any()


def test_mlm_probability_zero_leaves_the_text_as_it_is(mlm_data, tokenizer):
    dataset = mlm_data["validation"]
    batch = _batches(mlm_dataloader(dataset, tokenizer, batch_size=16, shuffle=False, mlm_probability=0.0), count=1)[0]
    assert torch.equal(batch["input_ids"], torch.tensor(dataset[:16]["input_ids"]))
    assert (batch["labels"] == -100).all()
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"mlm_probability=.* must be in \[0, 1\)"):
            mlm_dataloader(dataset, tokenizer, batch_size=16, mlm_probability=bad)


def test_masking_rate_and_80_10_10_split(mlm_data, tokenizer):
    dataset = mlm_data["train"].select(range(800))
    loader = mlm_dataloader(dataset, tokenizer, batch_size=100, seed=3)
    batches = _batches(loader)
    labels = torch.cat([batch["labels"] for batch in batches])
    masked = torch.cat([batch["input_ids"] for batch in batches])
    chosen = labels != -100
    rate = chosen.sum().item() / (len(dataset) * (SEQ_LEN - 2))  # 2 special tokens a row
    assert rate == pytest.approx(0.15, abs=0.01)
    total = chosen.sum().item()
    as_mask = (masked[chosen] == tokenizer.mask_token_id).sum().item() / total
    unchanged = (masked[chosen] == labels[chosen]).sum().item() / total
    random = 1 - as_mask - unchanged
    assert as_mask == pytest.approx(0.8, abs=0.02)
    assert unchanged == pytest.approx(0.1, abs=0.015)
    assert random == pytest.approx(0.1, abs=0.015)


def test_batches_are_deterministic_given_seed_and_epoch(mlm_data, tokenizer):
    dataset = mlm_data["validation"]
    first = _batches(mlm_dataloader(dataset, tokenizer, batch_size=16, seed=7), epoch=0, count=3)
    again = _batches(mlm_dataloader(dataset, tokenizer, batch_size=16, seed=7), epoch=0, count=3)
    for a, b in zip(first, again):
        assert all(torch.equal(a[key], b[key]) for key in a)
    loader = mlm_dataloader(dataset, tokenizer, batch_size=16, seed=7)
    epoch1 = _batches(loader, epoch=1, count=3)
    resumed = _batches(mlm_dataloader(dataset, tokenizer, batch_size=16, seed=7), epoch=1, count=3)
    for a, b in zip(epoch1, resumed):  # a resumed run sees the same epoch-1 batches
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(epoch1[0]["input_ids"], first[0]["input_ids"])
    other_seed = _batches(mlm_dataloader(dataset, tokenizer, batch_size=16, seed=8), epoch=0, count=1)
    assert not torch.equal(other_seed[0]["input_ids"], first[0]["input_ids"])


def test_masks_do_not_depend_on_batching(mlm_data, tokenizer):
    dataset = mlm_data["validation"].select(range(24))
    small = _batches(mlm_dataloader(dataset, tokenizer, batch_size=4, shuffle=False, seed=5), epoch=2)
    large = _batches(mlm_dataloader(dataset, tokenizer, batch_size=12, shuffle=False, seed=5), epoch=2)
    for key in ("input_ids", "labels"):
        assert torch.equal(torch.cat([batch[key] for batch in small]), torch.cat([batch[key] for batch in large]))


def test_accelerate_sharding_over_processes_keeps_the_batches(mlm_data, tokenizer):
    dataset = mlm_data["validation"].select(range(64))
    plain = _batches(mlm_dataloader(dataset, tokenizer, batch_size=8, seed=2), epoch=1)
    shards = []
    for rank in range(2):
        loader = prepare_data_loader(
            mlm_dataloader(dataset, tokenizer, batch_size=8, seed=2),
            device=torch.device("cpu"),
            num_processes=2,
            process_index=rank,
            put_on_device=False,
        )
        loader.set_epoch(1)
        shards.append(list(loader))
    # Accelerate deals whole batches round-robin: rank r gets batches r, r + 2, ...
    for index, batch in enumerate(plain):
        sharded = shards[index % 2][index // 2]
        assert all(torch.equal(batch[key], sharded[key]) for key in batch)


def test_resume_mid_epoch_with_accelerate_sees_the_same_batches(mlm_data, tokenizer):
    dataset = mlm_data["validation"].select(range(64))
    plain = _batches(mlm_dataloader(dataset, tokenizer, batch_size=8, seed=4), epoch=3)
    loader = mlm_dataloader(dataset, tokenizer, batch_size=8, seed=4)
    loader = prepare_data_loader(loader, device=torch.device("cpu"), num_processes=1, process_index=0)
    loader.set_epoch(3)
    resumed = list(skip_first_batches(loader, 5))  # what a run restarted after 5 steps of epoch 3 iterates
    assert len(resumed) == len(plain) - 5
    for batch, again in zip(plain[5:], resumed):
        assert all(torch.equal(batch[key], again[key]) for key in batch)
