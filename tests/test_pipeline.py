"""The main job end to end on a tiny space and a small random teacher: supernet -> search -> export."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from conftest import make_model_dir, supernet_arguments
from transformers import AutoModel, AutoModelForMaskedLM

from nasbert_hf import Architecture, count_params
from nasbert_hf.cli import main
from nasbert_hf.latency import LatencyTable
from nasbert_hf.pipeline import (
    SearchArguments, auto_budgets, check_budgets, compress, search_and_export, user_work,
)
from nasbert_hf.search import Budget, cost_model_for, load_candidates, minimum_cost
from nasbert_hf.export import from_supernet
from nasbert_hf.supernet import Supernet
from nasbert_hf.teacher import load_teacher


# Total parameters, embeddings included: the random teacher's 30522-token vocabulary at width 8 or 16
# is about 0.25M or 0.5M of them.
BUDGETS = ["params=320K", "params=450K", "params=600K"]


def params_cost(teacher_dir):
    from nasbert_hf.pipeline import teacher_dimensions

    return cost_model_for(Budget("params", math.inf), **teacher_dimensions(load_teacher(teacher_dir)))


@pytest.fixture(scope="module")
def compressed(supernet_setup):
    out = supernet_setup["root"] / "compress-out"
    run_dir = out / "supernet-run"
    training = supernet_arguments(supernet_setup, run_dir)
    searching = SearchArguments(run_dir=str(run_dir), budgets=BUDGETS, out=str(out), top_k=3, rescore_batches=2,
                                latency_repeats=2)
    summary = compress(training, searching)
    tables = load_candidates(run_dir / "candidates.json")
    return out, run_dir, summary, tables


def test_budgets_export_distinct_loadable_models(compressed):
    out, run_dir, summary, tables = compressed
    assert [m["name"] for m in summary["models"]] == ["nasbert-320K", "nasbert-450K", "nasbert-600K"]
    assert (out / "pareto.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["models"] == summary["models"]
    for record in summary["models"]:
        folder = out / record["name"]
        for name in ("model.safetensors", "config.json", "modeling_nasbert.py", "tokenizer.json", "README.md", "nasbert.json"):
            assert (folder / name).is_file(), name
        model = AutoModel.from_pretrained(folder)
        assert str(Architecture.from_config(model.config)) == record["architecture"]
        assert model.config.embedding_size == record["embedding_size"] in (8, 16)


def test_every_exported_model_respects_its_total_parameter_budget(compressed, supernet_setup):
    """`params=` counts every parameter of the model AutoModel loads, embeddings included."""
    out, _, summary, tables = compressed
    cost = params_cost(supernet_setup["teacher"])
    for record in summary["models"]:
        budget = Budget.parse(record["budget"])
        assert record["name"] == budget.name
        model = AutoModel.from_pretrained(out / record["name"])
        total = sum(p.numel() for p in model.parameters())
        assert total == record["params"] == count_params(model.config) <= budget.limit
        assert record["params"] == cost.cost(Architecture.parse(record["architecture"]))
        assert record["body_params"] == count_params(model.config, embeddings=False, pooler=False)
    assert minimum_cost(tables, cost) <= min(m["params"] for m in summary["models"])


def test_rerunning_a_finished_job_keeps_its_models(compressed, supernet_setup):
    out, run_dir, summary, _ = compressed
    before = {m["name"]: (out / m["name"] / "model.safetensors").stat().st_mtime_ns for m in summary["models"]}
    searching = SearchArguments(run_dir=str(run_dir), budgets=BUDGETS, out=str(out), top_k=3, rescore_batches=2,
                                latency_repeats=2)  # the same search as the first run's
    assert compress(supernet_arguments(supernet_setup, run_dir), searching, install=False) == summary
    assert before == {m["name"]: (out / m["name"] / "model.safetensors").stat().st_mtime_ns for m in summary["models"]}


def test_main_job_installs_its_models_by_name(compressed):
    """Right after compress, the models load by bare name (the zoo of this test session)."""
    out, _, summary, _ = compressed
    name = summary["models"][0]["name"]
    model = AutoModel.from_pretrained(name).eval()
    reference = AutoModel.from_pretrained(out / name).eval()
    input_ids = torch.randint(5, 1000, (2, 12))
    with torch.no_grad():
        assert torch.equal(model(input_ids).last_hidden_state, reference(input_ids).last_hidden_state)


def test_impossible_budgets_fail_before_training(supernet_setup, tmp_path):
    run_dir = tmp_path / "run"
    searching = SearchArguments(run_dir=str(run_dir), budgets=["params=1K"], out=str(tmp_path))
    with pytest.raises(ValueError, match="below the smallest model this search space can make"):
        compress(supernet_arguments(supernet_setup, run_dir), searching)
    assert not run_dir.exists()


def test_exported_model_computes_the_supernet_path(compressed, supernet_setup):
    out, run_dir, summary, _ = compressed
    supernet, _, run_config = Supernet.from_run(run_dir)
    teacher = load_teacher(run_config["teacher"])
    record = summary["models"][0]
    loaded = AutoModelForMaskedLM.from_pretrained(out / record["name"]).eval()
    exported = from_supernet(supernet, Architecture.parse(record["architecture"]), teacher).eval()
    input_ids = torch.randint(5, teacher.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, exported(input_ids).logits)


def test_search_reruns_on_a_finished_run_with_explicit_budgets(compressed, tmp_path):
    _, run_dir, summary, tables = compressed
    largest = max(m["params"] for m in summary["models"])
    budgets = [f"params={largest}", "latency=1000ms@cpu", f"body_params={summary['models'][0]['body_params']}"]
    result = search_and_export(SearchArguments(run_dir=str(run_dir), budgets=budgets, out=str(tmp_path), top_k=2,
                                               rescore_batches=1, latency_repeats=2))
    assert [m["name"] for m in result["models"]] == [Budget.parse(b).name for b in budgets]
    assert result["models"][0]["params"] <= largest
    assert result["models"][1]["latency_ms"]["cpu_predicted"] <= 1000
    assert result["models"][2]["body_params"] <= summary["models"][0]["body_params"]
    assert (tmp_path / "nasbert-1000ms-cpu" / "model.safetensors").is_file()


def test_latency_budgets_work_for_every_device(compressed, tmp_path):
    """cpu, cuda and ort-cpu budgets: a table in the run is used as it is (a cuda one measured on
    another machine, predicted only here); devices this machine has are measured for the card."""
    _, run_dir, _, _ = compressed
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("checkpoints"))
    cpu_table = LatencyTable.load(run / "latency-cpu.json")
    for device in ("cuda", "ort-cpu"):  # as if measured elsewhere and copied into the run
        replace(cpu_table, device=device, machine=f"another machine ({device})").save(run / f"latency-{device}.json")
    budgets = ["latency=1000ms@cuda", "latency=1000ms@ort-cpu"]
    result = search_and_export(SearchArguments(run_dir=str(run), budgets=budgets, out=str(tmp_path / "out"),
                                               top_k=1, rescore_batches=1, latency_repeats=2))
    assert [m["name"] for m in result["models"]] == ["nasbert-1000ms-cuda", "nasbert-1000ms-ort-cpu"]
    record = json.loads((tmp_path / "out" / "nasbert-1000ms-ort-cpu" / "nasbert.json").read_text())["latency_ms"]
    arch = Architecture.parse(result["models"][1]["architecture"])
    assert record["ort-cpu_predicted"] == pytest.approx(cpu_table.predict(arch), abs=1e-3)
    assert record["ort-cpu_predicted"] <= 1000
    assert record["ort-cpu"] > 0 and record["cpu"] > 0 and record["cuda_machine"] == "another machine (cuda)"
    assert ("cuda" in record) == torch.cuda.is_available()
    # A table measured for another sequence length is refused, naming the file.
    replace(cpu_table, device="ort-cpu", seq_len=cpu_table.seq_len * 2).save(run / "latency-ort-cpu.json")
    with pytest.raises(ValueError, match="latency-ort-cpu.json was measured for"):
        search_and_export(SearchArguments(run_dir=str(run), budgets=budgets[1:], out=str(tmp_path / "out2"),
                                          latency_repeats=2))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_latency_budget_without_table_or_device_fails_before_training(supernet_setup, tmp_path):
    run_dir = tmp_path / "run"
    searching = SearchArguments(run_dir=str(run_dir), budgets=["latency=5ms@cuda"], out=str(tmp_path))
    with pytest.raises(ValueError, match=r"torch sees no CUDA device here\. .*needs the table .*latency-cuda\.json"
                                         r".*nasbert latency-table --device cuda"):
        compress(supernet_arguments(supernet_setup, run_dir), searching)
    searching.budgets = [Budget.parse("latency=5ms@tpu")]
    with pytest.raises(ValueError, match=r"^Unknown latency device 'tpu'; known: cpu, cuda, ort-cpu\.$"):
        compress(supernet_arguments(supernet_setup, run_dir), searching)
    assert not run_dir.exists()


def test_impossible_budget_names_the_smallest_feasible_value(compressed, supernet_setup, tmp_path):
    _, run_dir, _, tables = compressed
    smallest = minimum_cost(tables, params_cost(supernet_setup["teacher"]))
    with pytest.raises(ValueError, match=f"smallest feasible value is {smallest:g}"):
        search_and_export(SearchArguments(run_dir=str(run_dir), budgets=[f"params={smallest - 1}"], out=str(tmp_path),
                                          latency_repeats=2))


def test_excluded_ops_are_left_out_and_a_rerun_with_other_ops_searches_again(compressed, supernet_setup, tmp_path):
    out, run_dir, summary, _ = compressed
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoints"))
    run_copy = copy / "supernet-run"
    budgets = [f"params={max(m['params'] for m in summary['models'])}"]
    options = {"run_dir": str(run_copy), "budgets": budgets, "top_k": 2, "rescore_batches": 1, "latency_repeats": 2}
    chosen = search_and_export(SearchArguments(**options, out=str(tmp_path / "all")))["models"][0]["architecture"]
    kind = sorted({code.split(":")[0] for code in Architecture.parse(chosen).layers} - {"id"})[0]  # the search used it
    # `compress` on the finished run: other excluded ops than its summary's make the search run again.
    result = compress(supernet_arguments(supernet_setup, run_copy),
                      SearchArguments(**options, out=str(copy), exclude_ops=[kind]), install=False)
    assert result["exclude_ops"] == [kind] and [m["name"] for m in result["models"]] == [Budget.parse(budgets[0]).name]
    layers = Architecture.parse(result["models"][0]["architecture"]).layers
    assert not any(code.split(":")[0] == kind for code in layers)
    record = json.loads((copy / result["models"][0]["name"] / "nasbert.json").read_text())
    assert record["search"]["exclude_ops"] == [kind]


def test_unknown_excluded_ops_fail_before_training(supernet_setup, compressed, tmp_path):
    run_dir = tmp_path / "run"
    searching = SearchArguments(run_dir=str(run_dir), out=str(tmp_path), exclude_ops=["conv:99"])
    with pytest.raises(ValueError, match=r"Unknown op\(s\) \['conv:99'\] in exclude_ops: the search space's ops"):
        compress(supernet_arguments(supernet_setup, run_dir), searching)
    assert not run_dir.exists()
    with pytest.raises(ValueError, match=r"Unknown op\(s\) \['attention'\]"):  # and in `nasbert search`
        search_and_export(SearchArguments(run_dir=str(compressed[1]), out=str(tmp_path), exclude_ops=["attention"]))


def test_auto_budgets_follow_the_papers_ladder(compressed, supernet_setup):
    _, _, _, tables = compressed
    cost = params_cost(supernet_setup["teacher"])
    low = minimum_cost(tables, cost)
    # The paper's sizes that the candidates meet, up to 70% of the teacher.
    ladder = (low / 2, low * 1.2, low * 1.5, low * 3)
    budgets = auto_budgets(tables, cost, teacher_params=low * 2.5, ladder=ladder)
    assert [b.limit for b in budgets] == [low * 1.2, low * 1.5] and all(b.metric == "params" for b in budgets)
    # None fits: a geometric ladder from just above the smallest model to 70% of the teacher.
    fallback = [b.limit for b in auto_budgets(tables, cost, teacher_params=low * 4, ladder=(low * 10,))]
    assert len(fallback) == 3 and low < fallback[0] < fallback[1] < fallback[2] <= 0.7 * 4 * low
    # No room for a ladder: one budget between the smallest model and the teacher.
    (only,) = auto_budgets(tables, cost, teacher_params=low * 1.5, ladder=(low * 10,))
    assert low <= only.limit <= 1.5 * low and not math.isinf(only.limit)


def test_check_budgets_knows_the_smallest_model_of_a_space(supernet_setup):
    from nasbert_hf.search_space import load_search_space

    teacher, space = load_teacher(supernet_setup["teacher"]), load_search_space(supernet_setup["space"])
    check_budgets([Budget.parse("params=320K"), Budget.parse("latency=0.001ms@cpu")], space, teacher)
    with pytest.raises(ValueError, match="Budget flops=1K is below the smallest model"):
        check_budgets([Budget.parse("flops=1K")], space, teacher)


def test_unfinished_run_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a finished supernet run"):
        search_and_export(SearchArguments(run_dir=str(tmp_path), out=str(tmp_path / "out")))


def test_report_fine_tunes_every_model_and_records_scores(compressed, shared_data, tmp_path):
    from nasbert_hf.report import ReportArguments, report

    out, _, summary, _ = compressed
    args = ReportArguments(out_dir=str(out), tasks=["sst2"], data_dir=str(shared_data / "glue"), max_train_samples=32,
                           max_eval_samples=32, max_seq_length=32, batch_size=16)
    table = report(args)
    assert table == (out / "report.md").read_text().strip()
    for record in summary["models"]:
        metadata = json.loads((out / record["name"] / "nasbert.json").read_text())
        results = json.loads((out / "report" / record["name"] / "sst2" / "eval_results.json").read_text())
        assert metadata["scores"]["sst2"] == pytest.approx(100 * results["eval_accuracy"], abs=0.01)
        assert f"| {record['name']} | searched |" in table
        assert "sst2" in (out / record["name"] / "README.md").read_text().lower()
    # A second report reuses the finished fine-tunes instead of training again.
    before = {p: p.stat().st_mtime for p in (out / "report").rglob("eval_results.json")}
    assert report(args) == table
    assert before == {p: p.stat().st_mtime for p in (out / "report").rglob("eval_results.json")}


# -- re-runs never replace a user's work; one run per folder --------------------------------------


@pytest.fixture
def finished_copy(compressed, tmp_path):
    """A copy of the finished compress folder (the same supernet run), and its search arguments."""
    out = tmp_path / "out"
    shutil.copytree(compressed[0], out, ignore=shutil.ignore_patterns("checkpoints"))
    searching = SearchArguments(run_dir=str(out / "supernet-run"), budgets=BUDGETS, out=str(out), top_k=3,
                                rescore_batches=2, latency_repeats=2)
    return out, searching


def mark_distilled(folder, steps=5):
    """What `nasbert distill` records in a model it distilled (its weights then differ from the export's)."""
    record = json.loads((folder / "nasbert.json").read_text())
    (folder / "nasbert.json").write_text(json.dumps({**record, "distillation": {"steps": steps}}))


def test_a_search_never_replaces_a_distilled_model_silently(finished_copy, supernet_setup, capsys):
    out, searching = finished_copy
    distilled = out / "nasbert-320K"
    mark_distilled(distilled)
    before = (distilled / "model.safetensors").read_bytes()
    # The same search keeps it; a search with other settings (here top_k) would replace it, and is refused.
    result = search_and_export(replace(searching, budgets=BUDGETS[:1]))
    assert [m["name"] for m in result["models"]] == ["nasbert-320K"]
    assert main(["search", searching.run_dir, "--out", str(out), "--budgets", BUDGETS[0]]) == 2
    error = capsys.readouterr().err
    assert f"{distilled} holds a distilled model (5 steps)" in error and "pass --force" in error
    with pytest.raises(ValueError, match="nasbert-320K holds a distilled model.*pass --force"):
        compress(supernet_arguments(supernet_setup, out / "supernet-run"), replace(searching, exclude_ops=["conv"]),
                 install=False)
    assert (distilled / "model.safetensors").read_bytes() == before
    assert json.loads((distilled / "nasbert.json").read_text())["distillation"] == {"steps": 5}
    # --force replaces it, and the distillation run of the model it replaced goes with it.
    (out / "distill-runs" / "nasbert-320K").mkdir(parents=True)
    search_and_export(replace(searching, budgets=BUDGETS[:1], top_k=2, force=True))
    assert "distillation" not in json.loads((distilled / "nasbert.json").read_text())
    assert not (out / "distill-runs" / "nasbert-320K").exists()


def test_user_work_says_what_a_model_folder_holds(tmp_path):
    """What a search may replace (None: absent, or a plain export) and what it may not without --force."""
    assert user_work(tmp_path, "nasbert-5M") is None
    folder = make_model_dir(tmp_path / "nasbert-5M")
    record = json.loads((folder / "nasbert.json").read_text())
    assert "was not exported by a search" in user_work(tmp_path, "nasbert-5M")
    for extra, reason in [({}, None), ({"distillation": {"steps": 3}}, "holds a distilled model (3 steps)"),
                          ({"scores": {"sst2": 80.0}}, "holds a model with fine-tuning scores (sst2)")]:
        (folder / "nasbert.json").write_text(json.dumps({**record, "search": {"top_k": 5}, **extra}))
        assert user_work(tmp_path, "nasbert-5M") == reason
    (tmp_path / "distill-runs" / "nasbert-5M" / "checkpoints").mkdir(parents=True)
    assert user_work(tmp_path, "nasbert-5M").startswith("is being distilled")
    (folder / "nasbert.json").write_text("{")
    shutil.rmtree(tmp_path / "distill-runs")
    assert user_work(tmp_path, "nasbert-5M").startswith("has an unreadable nasbert.json")


def test_a_missing_model_folder_is_exported_alone(finished_copy, supernet_setup):
    out, searching = finished_copy
    shutil.rmtree(out / "nasbert-450K")
    others = {name: (out / name / "model.safetensors").stat().st_mtime_ns for name in ("nasbert-320K", "nasbert-600K")}
    summary = compress(supernet_arguments(supernet_setup, out / "supernet-run"), searching, install=False)
    assert [m["name"] for m in summary["models"]] == ["nasbert-320K", "nasbert-450K", "nasbert-600K"]
    assert (out / "nasbert-450K" / "model.safetensors").is_file()
    assert others == {name: (out / name / "model.safetensors").stat().st_mtime_ns for name in others}


def test_default_budgets_after_a_budgets_run_give_the_default_family(finished_copy, supernet_setup):
    """A plain compress on a folder whose last search had other budgets searches the default family."""
    out, searching = finished_copy
    one = compress(supernet_arguments(supernet_setup, out / "supernet-run"), replace(searching, budgets=["params=500K"]),
                   install=False)
    assert [m["name"] for m in one["models"]] == ["nasbert-500K"]
    tables = load_candidates(out / "supernet-run" / "candidates.json")
    teacher = load_teacher(supernet_setup["teacher"])
    defaults = auto_budgets(tables, params_cost(supernet_setup["teacher"]), teacher.num_parameters())
    summary = compress(supernet_arguments(supernet_setup, out / "supernet-run"), replace(searching, budgets=[]),
                       install=False)
    assert summary["budgets"] == [str(b) for b in defaults] and len(defaults) > 1
    assert [m["name"] for m in summary["models"]] == [b.name for b in defaults]
    assert (out / "nasbert-500K" / "model.safetensors").is_file()  # the earlier search's model is left alone


def test_a_second_run_on_the_same_folder_fails_at_once_naming_the_first(finished_copy, supernet_setup, capsys):
    out, searching = finished_copy
    script = ("import time\nfrom nasbert_hf.folders import folder_lock\n"
              f"with folder_lock({str(out)!r}, 'nasbert compress'):\n    print('locked', flush=True)\n    time.sleep(300)")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        in_use = re.escape(f"{out} is in use by another process (process id {holder.pid}, nasbert compress)")
        with pytest.raises(OSError, match=in_use):
            compress(supernet_arguments(supernet_setup, out / "supernet-run"), searching, install=False)
        assert main(["search", searching.run_dir, "--out", str(out)]) == 2
        assert f"process id {holder.pid}" in capsys.readouterr().err
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a killed holder leaves no stale lock
        holder.wait()
    assert compress(supernet_arguments(supernet_setup, out / "supernet-run"), searching, install=False)["models"]
