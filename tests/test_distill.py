"""Pre-training distillation (`nasbert_hf.distill`, `nasbert distill`, `recipes/distill.py`).

Small random BERT teachers (with and without an MLM head) and students exported from a random
supernet, on a small sample of the embedded Wikipedia text; one test uses the default teacher.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from conftest import SPACE_YAML, real_text_sample, save_random_teacher

from nasbert_hf import Architecture
from nasbert_hf.data import build_mlm_datasets, mlm_dataloader
from nasbert_hf.distill import (
    DistillArguments,
    default_num_blocks,
    distill,
    distill_exported,
    distillation_losses,
    loss_sums,
    matched_layers,
)
from nasbert_hf.export import from_supernet, model_metadata, save_model_folder
from nasbert_hf.search_space import SearchSpace
from nasbert_hf.supernet import Supernet
from nasbert_hf.training import latest_checkpoint
from nasbert_hf.teacher import load_teacher

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "distill.py"
SPACE = SearchSpace([16, 24], ["mha:2", "mha:4", "ffn:32", "ffn:64", "conv:3", "id"], 4, 2)
ARCH = Architecture.parse("H24[mha:4,ffn:64,conv:3,ffn:32]")


def export_student(folder, teacher_dir, space=SPACE, arch=ARCH, seed=0):
    """A model folder as `nasbert search` writes it, from a random supernet."""
    teacher = load_teacher(teacher_dir)
    torch.manual_seed(seed)
    model = from_supernet(Supernet(space, teacher.hidden_size), arch, teacher)
    metadata = model_metadata(folder.name, arch, model.config, teacher=str(teacher_dir), search={"space": space.to_dict()})
    save_model_folder(model, teacher.tokenizer, metadata, folder)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    teacher = save_random_teacher(root / "teacher")
    mlm_teacher = save_random_teacher(root / "mlm_teacher", mlm=True)
    return {
        "root": root,
        "teacher": str(teacher),
        "mlm_teacher": str(mlm_teacher),
        "student": export_student(root / "student", teacher),
        "mlm_student": export_student(root / "mlm_student", mlm_teacher),
        "corpus": str(real_text_sample(root / "corpus.txt", 100_000)),
        "cache_dir": str(root / "cache"),
    }


def arguments(setup, out, model=None, **overrides):
    values = dict(
        model=str(model or setup["student"]), output_dir=str(out), run_dir=str(out.parent / f"{out.name}-run"),
        corpus=setup["corpus"], cache_dir=setup["cache_dir"], seq_len=32, batch_size=8, eval_batch_size=8,
        eval_batches=2, max_steps=6, warmup_steps=1, learning_rate=1e-3, save_steps=3, keep_checkpoints=2,
        logging_steps=3, max_train_sequences=200, cpu=True,
    )
    values.update(overrides)
    return DistillArguments(**values)


@pytest.fixture(scope="module")
def finished(setup):
    out = setup["root"] / "distilled"
    distill(arguments(setup, out))
    return out, setup["root"] / "distilled-run"


def read_record(folder):
    return json.loads((Path(folder) / "nasbert.json").read_text())["distillation"]


def log_lines(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


# -- the loss terms ----------------------------------------------------------------------------


def test_each_loss_term_matches_a_hand_computation():
    torch.manual_seed(0)
    batch, length, width, vocab, temperature = 2, 5, 3, 7, 2.0
    student = [torch.randn(batch, length, width) for _ in range(2)]
    teacher = [torch.randn(batch, length, width) for _ in range(2)]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = torch.full((batch, length), -100)
    labels[0, 1], labels[0, 3], labels[1, 2] = 4, 0, 6
    student_logits, teacher_logits = torch.randn(3, vocab), torch.randn(3, vocab)

    losses = distillation_losses(student, teacher, mask, labels, student_logits, teacher_logits, temperature)

    squared = [(s - t).pow(2).sum(-1) for s, t in zip(student, teacher)]  # (batch, length) per layer
    real = mask.bool()
    hidden = sum(error[real].sum() for error in squared) / (2 * real.sum() * width)
    kd, nll = 0.0, 0.0
    for row, target in zip(range(3), [4, 0, 6]):
        p_teacher = torch.softmax(teacher_logits[row] / temperature, -1)
        p_student = torch.softmax(student_logits[row] / temperature, -1)
        kd += temperature**2 * (p_teacher * (p_teacher.log() - p_student.log())).sum()
        nll += -torch.log_softmax(student_logits[row], -1)[target]
    assert losses["hidden"].item() == pytest.approx(hidden.item(), rel=1e-6)
    assert losses["mlm_kd"].item() == pytest.approx(kd.item() / 3, rel=1e-5)
    assert losses["mlm"].item() == pytest.approx(nll.item() / 3, rel=1e-6)
    # Identical distributions: no KD loss. Without teacher logits: no KD term at all.
    same = distillation_losses(student, teacher, mask, labels, student_logits, student_logits, temperature)
    assert same["mlm_kd"].item() == pytest.approx(0.0, abs=1e-6)
    assert set(distillation_losses(student, teacher, mask, labels, student_logits)) == {"hidden", "mlm"}
    # The global normaliser (several processes): MLM terms are sums over that count.
    scaled = distillation_losses(student, teacher, mask, labels, student_logits, teacher_logits, temperature, 6)
    assert scaled["mlm"].item() == pytest.approx(nll.item() / 6, rel=1e-6)
    assert scaled["hidden"].item() == pytest.approx(hidden.item(), rel=1e-6)
    sums = loss_sums(student, teacher, mask, labels, student_logits)
    assert sums["mlm"][1].item() == 3 and sums["hidden"][1].item() == 2 * 8 * width


def test_layer_matching():
    assert matched_layers(12, 3) == [4, 8, 12]
    assert matched_layers(12, 1) == [12]
    with pytest.raises(ValueError, match=r"num_blocks=5 must divide the student's 12 slots \(valid: \[1, 2, 3, 4, 6, 12\]\)"):
        matched_layers(12, 5)
    searched = {"search": {"space": {"num_blocks": 3}}}
    assert default_num_blocks(searched, teacher_layers=6, num_slots=12) == 3
    assert default_num_blocks(searched, teacher_layers=2, num_slots=12) == 2  # does not fit: gcd
    assert default_num_blocks(None, teacher_layers=4, num_slots=6) == 2
    assert default_num_blocks(None, teacher_layers=12, num_slots=24) == 12
    assert default_num_blocks(None, teacher_layers=5, num_slots=6) == 1


# -- whole runs --------------------------------------------------------------------------------


def reference_losses(model_dir, teacher_dir, args, mlm_probability=0.15):
    """Validation losses computed directly from the saved folders (full-vocabulary logits of
    `AutoModelForMaskedLM`s, hidden states of plain forward passes) on the run's validation batches."""
    from transformers import AutoModelForMaskedLM

    student = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    teacher = AutoModelForMaskedLM.from_pretrained(teacher_dir).eval() if args.mlm_kd_weight else None
    plain = load_teacher(teacher_dir)
    splits = build_mlm_datasets(args.corpus, plain.tokenizer, seq_len=args.seq_len, validation_size=args.validation_size,
                                seed=args.seed, max_train_sequences=args.max_train_sequences, cache_dir=args.cache_dir)
    loader = mlm_dataloader(splits["validation"], plain.tokenizer, args.eval_batch_size, shuffle=False, seed=args.seed,
                            mlm_probability=mlm_probability)
    dense = student.cls.dense  # the projections start as the MLM head's dense layer
    sums = {"hidden": 0.0, "mlm_kd": 0.0, "mlm": 0.0}
    counts = {"hidden": 0, "mlm": 0}
    with torch.no_grad():
        for _, batch in zip(range(args.eval_batches), loader):
            masked = batch["labels"] != -100
            out = student(batch["input_ids"], output_hidden_states=True)
            targets = plain.model(batch["input_ids"], output_hidden_states=True).hidden_states
            for s, t in zip((2, 4), (2, 4)):  # 4 slots and 4 teacher layers in 2 blocks
                sums["hidden"] += (dense(out.hidden_states[s]) - targets[t]).pow(2).sum().item()
                counts["hidden"] += targets[t].numel()
            sums["mlm"] += F.cross_entropy(out.logits[masked], batch["labels"][masked], reduction="sum").item()
            counts["mlm"] += int(masked.sum())
            if teacher is not None:
                soft = F.log_softmax(teacher(batch["input_ids"]).logits[masked], -1)
                sums["mlm_kd"] += F.kl_div(F.log_softmax(out.logits[masked], -1), soft, reduction="sum",
                                           log_target=True).item()
    losses = {"hidden": sums["hidden"] / counts["hidden"]}
    if counts["mlm"]:  # unmasked text has no masked positions
        losses["mlm"] = sums["mlm"] / counts["mlm"]
    if teacher is not None:
        losses["mlm_kd"] = sums["mlm_kd"] / counts["mlm"]
    return losses


def test_run_writes_the_distilled_model_and_its_record(setup, finished):
    from transformers import AutoModelForMaskedLM

    out, run_dir = finished
    for name in ("model.safetensors", "config.json", "modeling_nasbert.py", "tokenizer.json", "README.md", "nasbert.json"):
        assert (out / name).is_file(), name
    metadata = json.loads((out / "nasbert.json").read_text())
    assert metadata["architecture"] == str(ARCH)  # the export's metadata is kept
    record = metadata["distillation"]
    assert record["steps"] == 6 and record["num_blocks"] == 2
    assert record["student_layers"] == [2, 4] and record["teacher_layers"] == [2, 4]
    assert record["projections_init"] == "mlm_head.dense"
    assert set(record["validation_after"]) == {"hidden", "mlm", "total"}  # no MLM head: no KD term
    log = log_lines(run_dir)
    assert [entry["step"] for entry in log] == [3, 6]
    assert all(set(entry) == {"step", "loss", "loss/hidden", "loss/mlm", "lr"} for entry in log)
    assert [path.name for path in sorted((run_dir / "checkpoints").iterdir())] == ["step-00000003", "step-00000006"]
    # The loaded model is the trained one, with the model's own dropout in its config.
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert model.config.hidden_dropout_prob == 0.1 and list(model.config.layers) == list(ARCH.layers)
    before = AutoModelForMaskedLM.from_pretrained(setup["student"])
    assert not torch.equal(model.nasbert.encoder.layers[0].query.weight, before.nasbert.encoder.layers[0].query.weight)


def test_validation_losses_match_a_direct_computation(setup, finished):
    out, _ = finished
    args = arguments(setup, out, mlm_kd_weight=0.0)
    expected = reference_losses(setup["student"], setup["teacher"], args)
    before = read_record(out)["validation_before"]
    for name, value in expected.items():
        assert before[name] == pytest.approx(value, rel=1e-4), name
    assert before["total"] == pytest.approx(before["hidden"] + before["mlm"], rel=1e-6)


def test_soft_label_kd_only_with_an_mlm_head_teacher(setup, tmp_path):
    out = tmp_path / "kd"
    args = arguments(setup, out, model=setup["mlm_student"], max_steps=2, temperature=1.0)
    distill(args)
    record = read_record(out)
    assert set(record["validation_before"]) == {"hidden", "mlm_kd", "mlm", "total"}
    assert record["teacher"] == setup["mlm_teacher"]  # from the model's nasbert.json
    assert "loss/mlm_kd" in log_lines(tmp_path / "kd-run")[-1]
    expected = reference_losses(setup["mlm_student"], setup["mlm_teacher"], args)
    for name, value in expected.items():
        assert record["validation_before"][name] == pytest.approx(value, rel=1e-4), name
    # The weight of a term switches it off.
    quiet = tmp_path / "no-kd"
    distill(arguments(setup, quiet, model=setup["mlm_student"], max_steps=1, mlm_kd_weight=0.0))
    assert "mlm_kd" not in read_record(quiet)["validation_after"]


def test_only_an_mlm_term_masks_the_text(setup, finished, tmp_path):
    out, run_dir = finished  # with the student's MLM term: BERT-masked text
    assert json.loads((run_dir / "distill_config.json").read_text())["masked_inputs"] is True
    plain = tmp_path / "plain"
    args = arguments(setup, plain, max_steps=1, mlm_weight=0.0, mlm_kd_weight=0.0)
    distill(args)
    plain_run = tmp_path / "plain-run"
    assert json.loads((plain_run / "distill_config.json").read_text())["masked_inputs"] is False
    before = read_record(plain)["validation_before"]
    assert set(before) == {"hidden", "total"}
    # The hidden-state term is computed on the text itself.
    unmasked = reference_losses(setup["student"], setup["teacher"], args, mlm_probability=0.0)["hidden"]
    masked = reference_losses(setup["student"], setup["teacher"], args)["hidden"]
    assert before["hidden"] == pytest.approx(unmasked, rel=1e-5) and abs(unmasked - masked) > 1e-4 * unmasked
    # A run recorded before masking was recorded (so trained on masked text) does not resume unmasked.
    config = json.loads((plain_run / "distill_config.json").read_text())
    del config["masked_inputs"]
    (plain_run / "distill_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trained on BERT-masked text, this one would be on unmasked text"):
        distill(arguments(setup, tmp_path / "again", run_dir=str(plain_run), max_steps=1, mlm_weight=0.0,
                          mlm_kd_weight=0.0, resume=True))


def test_resume_from_a_checkpoint_gives_the_same_model(setup, finished, tmp_path):
    out, run_dir = finished
    resumed_run = tmp_path / "run"
    shutil.copytree(run_dir, resumed_run)
    # As if killed after step 3 was saved, in the middle of writing step 6.
    shutil.rmtree(resumed_run / "checkpoints" / "step-00000006")
    shutil.copytree(resumed_run / "checkpoints" / "step-00000003", resumed_run / "checkpoints" / ".tmp-step-00000006")
    (resumed_run / "checkpoints" / ".tmp-step-00000006" / "trainer_state.json").unlink()
    assert latest_checkpoint(resumed_run).name == "step-00000003"
    resumed = tmp_path / "model"
    distill(arguments(setup, resumed, run_dir=str(resumed_run), resume=True))
    a, b = load_file(out / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert (resumed_run / "log.jsonl").read_text() == (run_dir / "log.jsonl").read_text()
    assert read_record(resumed) == read_record(out)


def test_an_existing_run_needs_resume_and_the_same_arguments(setup, finished, tmp_path):
    out, run_dir = finished
    with pytest.raises(ValueError, match="already holds a distillation run.*--resume"):
        distill(arguments(setup, tmp_path / "x", run_dir=str(run_dir)))
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    with pytest.raises(ValueError, match="started with learning_rate=0.001, now learning_rate=0.5"):
        distill(arguments(setup, tmp_path / "y", run_dir=str(copy), resume=True, learning_rate=0.5))


def test_bad_inputs_give_clear_errors(setup, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        distill(arguments(setup, tmp_path / "a", model=tmp_path / "no-such-model"))
    no_weights = tmp_path / "no-weights"
    shutil.copytree(setup["student"], no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no-weights has no safetensors weights"):
        distill(arguments(setup, tmp_path / "b", model=no_weights))
    with pytest.raises(ValueError, match="holds a 'bert' model; distillation takes NasBert models"):
        distill(arguments(setup, tmp_path / "f", model=setup["teacher"]))
    other_vocab = tmp_path / "other-vocab"
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(other_vocab)
    shutil.copy(Path(setup["teacher"]) / "tokenizer.json", other_vocab)
    shutil.copy(Path(setup["teacher"]) / "tokenizer_config.json", other_vocab)
    with pytest.raises(ValueError, match=r"student's vocabulary \(30522 tokens\) differs .*\(1000\)"):
        distill(arguments(setup, tmp_path / "c", teacher=str(other_vocab)))
    with pytest.raises(ValueError, match="num_blocks=3 must divide the student's 4 slots"):
        distill(arguments(setup, tmp_path / "d", num_blocks=3))
    shallow = save_random_teacher(tmp_path / "shallow", layers=2)
    with pytest.raises(ValueError, match="num_blocks=4 is invalid for a teacher with num_layers=2"):
        distill(arguments(setup, tmp_path / "e", teacher=str(shallow), num_blocks=4))
    with pytest.raises(ValueError, match="model is required"):
        distill(DistillArguments())
    with pytest.raises(ValueError, match="temperature=0 must be positive"):
        DistillArguments(temperature=0)


def test_a_few_steps_lower_the_loss_on_real_text(tmp_path):
    """The default teacher (all-MiniLM-L6-v2), a narrow random student, real Wikipedia text."""
    from nasbert_hf.search_space import SearchSpace
    from nasbert_hf.teacher import DEFAULT_TEACHER

    arch = Architecture.parse("H128[mha:2,ffn:384,mha:2,ffn:384,conv:3,ffn:384,mha:4,ffn:384,mha:2,ffn:768,id,ffn:384]")
    # A narrow student of a space in principal coordinates, with the teacher's embedding width.
    space = SearchSpace([128, 192, 256], ["mha:2", "mha:4", "ffn:384", "ffn:768", "conv:3", "id"], 12, 3)
    student = export_student(tmp_path / "student", DEFAULT_TEACHER, space, arch)
    corpus = real_text_sample(tmp_path / "wiki.txt", 60_000)
    out = tmp_path / "distilled"
    distill(DistillArguments(model=str(student), output_dir=str(out), corpus=str(corpus), cache_dir=str(tmp_path / "cache"),
                             seq_len=32, batch_size=8, max_steps=6, warmup_steps=1, learning_rate=1e-3,
                             eval_batch_size=8, eval_batches=2, save_steps=10, cpu=True))
    record = read_record(out)
    assert record["num_blocks"] == 3 and record["teacher_layers"] == [2, 4, 6]
    before, after = record["validation_before"], record["validation_after"]
    assert after["total"] < 0.9 * before["total"], (before, after)
    assert after["hidden"] < before["hidden"] and after["mlm"] < before["mlm"], (before, after)


def test_compress_stage_distils_in_place_once(setup, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(setup["student"], out / "nasbert-1M")
    options = dict(corpus=setup["corpus"], cache_dir=setup["cache_dir"], seq_len=32, batch_size=8, eval_batch_size=8,
                   eval_batches=1, max_train_sequences=100, cpu=True)
    distill_exported(out, ["nasbert-1M"], 2, **options)
    assert read_record(out / "nasbert-1M")["steps"] == 2
    run_dir = out / "distill-runs" / "nasbert-1M"
    assert (run_dir / "distill_config.json").is_file() and not (run_dir / "checkpoints").exists()
    weights = (out / "nasbert-1M" / "model.safetensors").stat().st_mtime_ns
    distill_exported(out, ["nasbert-1M"], 2, **options)  # already distilled: skipped
    assert (out / "nasbert-1M" / "model.safetensors").stat().st_mtime_ns == weights
    assert sorted(path.name for path in out.iterdir()) == ["distill-runs", "nasbert-1M"]  # nothing left over


def test_projections_start_from_the_supernet_runs_output_projections(setup, tmp_path):
    from nasbert_hf.distill import DistillationStudent, init_projections, load_student

    torch.manual_seed(1)
    supernet = Supernet(SPACE, 32).eval()
    supernet.save(tmp_path / "supernet.safetensors")
    teacher = load_teacher(setup["teacher"])
    model = from_supernet(supernet, ARCH, teacher).eval()
    student = DistillationStudent(model, 32, [2, 4])
    assert init_projections(student, tmp_path) == f"supernet:{tmp_path}"
    for projection, block in zip(student.projections, supernet.blocks):
        assert torch.equal(projection.weight, block.output_projection.weight[:, :24])
        assert torch.equal(projection.bias, block.output_projection.bias)
    # So the distillation starts where the search scored the model: its last matched state is the
    # supernet's assembled prediction of the teacher's final hidden state.
    input_ids = torch.randint(5, 1000, (2, 16))
    with torch.no_grad():
        states, _ = student(input_ids)
        expected = supernet.project(supernet.encode(ARCH, teacher.block_states(input_ids, None, 2)[0]))
    torch.testing.assert_close(states[-1], expected, rtol=0, atol=1e-5)
    model, _ = load_student(setup["student"])
    with pytest.raises(ValueError, match="has 2 blocks; this distillation matches 1 layers"):
        init_projections(DistillationStudent(model, 32, [4]), tmp_path)
    with pytest.raises(FileNotFoundError, match="supernet.safetensors not found"):
        init_projections(student, tmp_path / "elsewhere")
    assert init_projections(DistillationStudent(model, 20, [2, 4])) == "random"  # dense is 24 -> 32, not 24 -> 20


# -- command line and recipe -------------------------------------------------------------------


def test_command_line_and_recipe_arguments(setup, tmp_path, capsys):
    from nasbert_hf.cli import main

    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("MODEL_DIR", "--teacher", "--corpus", "--out", "--max-steps", "--resume", "--mlm-kd-weight"):
        assert flag in help_text
    assert main(["distill", str(tmp_path / "missing-model")]) == 2
    assert "missing-model does not exist" in capsys.readouterr().err

    sys.path.insert(0, str(RECIPE.parent))
    try:
        from distill import parse_arguments  # recipes/distill.py
    finally:
        sys.path.remove(str(RECIPE.parent))
    from nasbert_hf.arguments import read_config

    for name in ("tiny", "base"):  # `nasbert compress` passes the presets' sections as DistillArguments
        DistillArguments(**read_config(name)["distill"])
    preset = read_config("tiny")["distill"]
    args = parse_arguments([str(REPO / "recipes" / "configs" / "tiny.yaml"), "--model", "m", "--learning_rate", "0.1"])
    assert (args.model, args.max_steps, args.batch_size) == ("m", preset["max_steps"], preset["batch_size"])
    assert args.learning_rate == 0.1
    flat = tmp_path / "distill.json"
    flat.write_text(json.dumps({"model": "m", "temperature": 2.0}))
    assert parse_arguments([str(flat)]).temperature == 2.0
    flat.write_text(json.dumps({"model": "m", "temprature": 2.0}))
    with pytest.raises(ValueError, match=r"Unknown distill arguments \['temprature'\] in .*distill.json"):
        parse_arguments([str(flat)])


def test_command_line_distils(setup, tmp_path):
    from nasbert_hf.cli import main

    out = tmp_path / "cli"
    code = main(["distill", str(setup["student"]), "--out", str(out), "--corpus", setup["corpus"], "--cache-dir",
                 setup["cache_dir"], "--seq-len", "32", "--batch-size", "8", "--eval-batch-size", "8", "--max-steps", "2",
                 "--max-train-sequences", "100", "--cpu"])
    assert code == 0
    assert read_record(out)["steps"] == 2
    assert (tmp_path / "distill-runs" / "cli" / "log.jsonl").is_file()


def test_compress_distils_every_exported_model(tmp_path):
    from nasbert_hf.cli import main

    root = tmp_path
    (root / "space.yaml").write_text(SPACE_YAML)
    teacher = save_random_teacher(root / "teacher")
    corpus = real_text_sample(root / "corpus.txt")
    out = root / "out"
    code = main(["compress", "--config", str(root / "space.yaml"), "--teacher", str(teacher), "--corpus", str(corpus),
                 "--out", str(out), "--top-k", "2", "--cpu", "--distill-steps", "2"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["models"]) == 3
    for model in summary["models"]:
        record = read_record(out / model["name"])
        assert record["steps"] == 2 and record["projections_init"] == f"supernet:{out / 'supernet-run'}"
        assert record["num_blocks"] == 2 and record["seq_len"] == 32
    assert sorted(path.name for path in (out / "distill-runs").iterdir()) == sorted(m["name"] for m in summary["models"])


# -- several processes and kills (slow) --------------------------------------------------------


def command_line(setup, out, *extra):
    return [
        str(RECIPE), "--model", str(setup["student"]), "--output_dir", str(out), "--corpus", setup["corpus"],
        "--cache_dir", setup["cache_dir"], "--seq_len", "32", "--batch_size", "8", "--eval_batch_size", "8",
        "--max_train_sequences", "200", "--learning_rate", "1e-3", "--warmup_steps", "1", "--dropout", "0.0", "--cpu",
        *extra,
    ]


def run_recipe(arguments, processes=1, **kwargs):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if processes == 1:
        command = [sys.executable, *arguments]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), *arguments]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def same_weights(first, second, atol=0.0):
    a, b = load_file(Path(first) / "model.safetensors"), load_file(Path(second) / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


@pytest.mark.slow
def test_two_gloo_processes_agree_with_one_process(setup, tmp_path):
    outputs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        process = run_recipe(command_line(setup, out, "--max_steps", "6"), processes=processes)
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
        outputs[processes] = out
    config = json.loads((tmp_path / "distill-runs" / "p2" / "distill_config.json").read_text())
    assert config["num_processes"] == 2
    same_weights(outputs[1], outputs[2], atol=2e-5)
    one, two = read_record(outputs[1]), read_record(outputs[2])
    for name, value in one["validation_after"].items():
        assert two["validation_after"][name] == pytest.approx(value, rel=1e-4), name


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_model(setup, tmp_path):
    extra = ["--max_steps", "60", "--save_steps", "4"]
    reference = tmp_path / "reference"
    process = run_recipe(command_line(setup, reference, *extra))
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    killed = tmp_path / "killed"
    run_dir = tmp_path / "distill-runs" / "killed"
    process = run_recipe(command_line(setup, killed, *extra), start_new_session=True)
    deadline = time.time() + 120
    while latest_checkpoint(run_dir) is None and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere in the middle of a step or a save
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    assert not killed.exists(), "the run finished before it was killed"
    process = run_recipe(command_line(setup, killed, *extra, "--resume"))
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert "resuming from" in output
    same_weights(reference, killed)


# -- run folders: moved, damaged, and the arguments they accept --------------------------------


def test_a_moved_run_folder_resumes(setup, finished, tmp_path):
    out, run_dir = finished
    config = json.loads((run_dir / "distill_config.json").read_text())
    assert config["training"]["model"] == os.path.join("..", "student")  # relative to the run folder
    moved = tmp_path / "moved"
    shutil.copytree(setup["student"], moved / "student")
    shutil.copytree(run_dir, moved / "run")
    resumed = moved / "model"
    distill(arguments(setup, resumed, model=moved / "student", run_dir=str(moved / "run"), resume=True))
    same_weights(out, resumed)
    # A run config written before the paths were relative holds absolute ones: still read.
    config = json.loads((moved / "run" / "distill_config.json").read_text())
    config["training"]["model"] = str((moved / "student").resolve())
    (moved / "run" / "distill_config.json").write_text(json.dumps(config))
    distill(arguments(setup, moved / "again", model=moved / "student", run_dir=str(moved / "run"), resume=True))
    other = moved / "other-student"
    export_student(other, setup["teacher"], seed=1)  # same architecture, other weights
    with pytest.raises(ValueError, match="started with model="):
        distill(arguments(setup, moved / "other", model=other, run_dir=str(moved / "run"), resume=True))
    deeper = export_student(moved / "deeper", setup["teacher"], arch=Architecture.parse("H24[mha:4,ffn:64,id,id]"))
    with pytest.raises(ValueError, match=r"the run distils E32:H24\[mha:4,ffn:64,conv:3,ffn:32\]"):
        distill(arguments(setup, moved / "other", model=deeper, run_dir=str(moved / "run"), resume=True))


def test_resume_skips_a_checkpoint_without_trainer_state_and_replaces_it(setup, finished, tmp_path, caplog):
    from nasbert_hf.training import checkpoint_problem

    out, run_dir = finished
    resumed_run = tmp_path / "run"
    shutil.copytree(run_dir, resumed_run)
    newest = resumed_run / "checkpoints" / "step-00000006"
    (newest / "trainer_state.json").unlink()
    with caplog.at_level("WARNING", logger="nasbert_hf.training"):
        assert latest_checkpoint(resumed_run).name == "step-00000003"
    assert "step-00000006" in caplog.text and "trainer_state.json" in caplog.text
    resumed = tmp_path / "model"
    # Used to restart from step 0, then fail to rename .tmp-step-N onto the non-empty step-N.
    distill(arguments(setup, resumed, run_dir=str(resumed_run), resume=True))
    same_weights(out, resumed)
    assert checkpoint_problem(newest) is None
    assert sorted(path.name for path in (resumed_run / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda folder: _truncate(next(folder.glob("model*.safetensors"))), "is truncated or not a safetensors file"),
        (lambda folder: next(folder.glob("optimizer*.bin")).write_bytes(b"garbage"), "is truncated or not a torch archive"),
        (lambda folder: _truncate(next(folder.glob("optimizer*.bin"))), "is truncated or not a torch archive"),
        (lambda folder: (folder / "trainer_state.json").write_text('{"st'), "trainer_state.json is not valid JSON"),
        (lambda folder: next(folder.glob("random_states*")).write_bytes(b""), "is empty"),
        (lambda folder: next(folder.glob("optimizer*.bin")).unlink(), "no optimizer state"),
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(finished, tmp_path, caplog, damage, reason):
    from nasbert_hf.training import checkpoint_problem

    _, run_dir = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir / "checkpoints", copy / "checkpoints")
    newest = copy / "checkpoints" / "step-00000006"
    assert checkpoint_problem(newest) is None
    damage(newest)
    assert reason in checkpoint_problem(newest)
    with caplog.at_level("WARNING", logger="nasbert_hf.training"):
        assert latest_checkpoint(copy).name == "step-00000003"
    assert "step-00000006" in caplog.text and reason in caplog.text


def test_an_unreadable_checkpoint_is_a_value_error_naming_it(tmp_path):
    from safetensors import SafetensorError

    from nasbert_hf.training import load_checkpoint

    class Accelerator:
        def load_state(self, folder):
            raise SafetensorError("Error while deserializing header: invalid JSON in header")

    with pytest.raises(ValueError, match=f"Cannot resume from checkpoint {tmp_path}: .*invalid JSON.*delete that folder"):
        load_checkpoint(Accelerator(), tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learning_rate": -1.0}, "learning_rate=-1.0 must be a positive number"),
        ({"learning_rate": 0.0}, "learning_rate=0.0 must be a positive number"),
        ({"lr_scheduler_type": "foo"}, "lr_scheduler_type='foo' is not a scheduler; use one of linear, cosine"),
        ({"lr_scheduler_type": "reduce_lr_on_plateau"}, "is not a scheduler"),
        ({"max_grad_norm": -1.0}, "max_grad_norm=-1.0 must be non-negative"),
        ({"warmup_steps": -1}, "warmup_steps=-1 must be non-negative"),
        ({"keep_checkpoints": 0}, "keep_checkpoints=0 must be at least 1"),
        ({"mixed_precision": "fp8"}, "mixed_precision='fp8' is not one of no, fp16, bf16"),
        ({"validation_size": 0.0}, "validation_size=0.0 must be a fraction"),
    ],
)
def test_arguments_are_validated_before_anything_is_written(overrides, message):
    with pytest.raises(ValueError, match=message):
        DistillArguments(model="m", **overrides)


def test_compress_passes_the_presets_distill_section_with_the_steps_apart():
    from nasbert_hf.commands.compress import distill_settings
    from nasbert_hf.arguments import read_config

    preset = read_config("tiny")
    steps, options = distill_settings(preset)
    assert steps == preset["distill"]["max_steps"] and "max_steps" not in options
    steps, options = distill_settings(preset, 1)  # --distill-steps 1 used to pass max_steps twice
    assert steps == 1 and "max_steps" not in options and options["batch_size"] == preset["distill"]["batch_size"]
    assert distill_settings({"search_space": {}}, None) == (0, {})
    with pytest.raises(ValueError, match=r"Unknown distillation arguments \['batchsize'\]"):
        distill_settings({"distill": {"batchsize": 8}}, 1)
    with pytest.raises(ValueError, match="learning_rate=-1 must be a positive number"):
        distill_settings({"distill": {"learning_rate": -1}}, 1)
    with pytest.raises(ValueError, match=r"Distillation options \['max_steps'\] are set per exported model"):
        distill_exported("out", ["m"], 1, max_steps=3)
