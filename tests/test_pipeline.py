"""The main job end to end on a tiny space and a small random teacher: supernet -> search -> export."""

import json
import math

import pytest
import torch
from test_supernet_training import arguments, setup  # noqa: F401  (module-scoped fixture)
from transformers import AutoModel, AutoModelForMaskedLM

from nasbert_hf import Architecture
from nasbert_hf.cost import ParamsCost
from nasbert_hf.pipeline import SearchArguments, auto_budgets, compress, search_and_export
from nasbert_hf.search import Budget, load_candidates, minimum_cost
from nasbert_hf.supernet import Supernet
from nasbert_hf.teacher import load_teacher


@pytest.fixture(scope="module")
def compressed(setup):  # noqa: F811
    out = setup["root"] / "compress-out"
    run_dir = out / "supernet-run"
    training = arguments(setup, run_dir)
    searching = SearchArguments(run_dir=str(run_dir), budgets=[], out=str(out), top_k=3, rescore_batches=2,
                                latency_repeats=2)
    summary = compress(training, searching)
    tables = load_candidates(run_dir / "candidates.json")
    return out, run_dir, summary, tables


def test_default_budgets_export_distinct_loadable_models(compressed):
    out, run_dir, summary, tables = compressed
    assert len(summary["models"]) == 3
    assert len({m["name"] for m in summary["models"]}) == 3
    assert (out / "pareto.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["models"] == summary["models"]
    for record in summary["models"]:
        folder = out / record["name"]
        for name in ("model.safetensors", "config.json", "modeling_nasbert.py", "tokenizer.json", "README.md", "nasbert.json"):
            assert (folder / name).is_file(), name
        model = AutoModel.from_pretrained(folder)
        assert str(Architecture.from_config(model.config)) == record["architecture"]


def test_every_exported_model_respects_its_budget(compressed):
    out, _, summary, tables = compressed
    for record in summary["models"]:
        budget = Budget.parse(record["budget"])
        assert record["name"] == budget.name
        assert record["params_no_embeddings"] <= budget.limit
        assert record["params_no_embeddings"] == ParamsCost().cost(Architecture.parse(record["architecture"]))
    assert minimum_cost(tables, ParamsCost()) <= min(m["params_no_embeddings"] for m in summary["models"])


def test_exported_model_computes_the_supernet_path(compressed, setup):  # noqa: F811
    out, run_dir, summary, _ = compressed
    supernet, _, run_config = Supernet.from_run(run_dir)
    teacher = load_teacher(run_config["teacher"])
    record = summary["models"][0]
    loaded = AutoModelForMaskedLM.from_pretrained(out / record["name"]).eval()
    exported = supernet.export(Architecture.parse(record["architecture"]), teacher).eval()
    input_ids = torch.randint(5, teacher.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, exported(input_ids).logits)


def test_search_reruns_on_a_finished_run_with_explicit_budgets(compressed, tmp_path):
    _, run_dir, summary, tables = compressed
    largest = max(m["params_no_embeddings"] for m in summary["models"])
    budgets = [f"params={largest}", "latency=1000ms@cpu"]
    result = search_and_export(SearchArguments(run_dir=str(run_dir), budgets=budgets, out=str(tmp_path), top_k=2,
                                               rescore_batches=1, latency_repeats=2))
    assert [m["name"] for m in result["models"]] == [Budget.parse(b).name for b in budgets]
    assert result["models"][0]["params_no_embeddings"] <= largest
    assert result["models"][1]["latency_ms"]["cpu_predicted"] <= 1000
    assert (tmp_path / "nasbert-1000ms-cpu" / "model.safetensors").is_file()


def test_impossible_budget_names_the_smallest_feasible_value(compressed, tmp_path):
    _, run_dir, _, tables = compressed
    smallest = minimum_cost(tables, ParamsCost())
    with pytest.raises(ValueError, match=f"smallest feasible value is {smallest:g}"):
        search_and_export(SearchArguments(run_dir=str(run_dir), budgets=[f"params={smallest - 1}"], out=str(tmp_path),
                                          latency_repeats=2))


def test_auto_budgets_span_the_feasible_range(compressed):
    _, _, _, tables = compressed
    budgets = auto_budgets(tables)
    low = minimum_cost(tables, ParamsCost())
    assert len(budgets) == 3 and all(b.metric == "params" and b.limit >= low for b in budgets)
    assert [b.limit for b in budgets] == sorted(b.limit for b in budgets)
    assert not math.isinf(budgets[-1].limit)


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
