"""The training loop both stages run and its run folder (`nasbert_hf.training`), on a toy model.

The stages' own tests (`test_supernet_training.py`, `test_distill.py`) run the loop end to end;
these check what the loop guarantees by itself, for any stage.
"""

import errno
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from torch.utils.data import DataLoader, TensorDataset

from nasbert_hf import distill, supernet_training
from nasbert_hf.distill import DistillArguments
from nasbert_hf.supernet_training import SupernetTrainingArguments
from nasbert_hf.training import (
    LoopArguments,
    TrainingLoop,
    check_run_dir,
    latest_checkpoint,
    make_accelerator,
    write_run_config,
)

# Each stage's resume check, called as `check(saved, current, run_dir)`, and how its refusal ends.
STAGES = [
    pytest.param(supernet_training, SupernetTrainingArguments, "start a new run folder",
                 lambda saved, current, run_dir: supernet_training._check_same_run(saved, current), id="supernet"),
    pytest.param(distill, DistillArguments, "use another --run-dir",
                 lambda saved, current, run_dir: distill._check_same_run(saved, current, "model", run_dir),
                 id="distill"),
]


class ToyLoop(TrainingLoop):
    """A dropout regression: its result depends on the batches, the dropout masks and the
    optimizer state, all of which a resumed run must restore."""

    name = "toy"
    eval_steps = (3, 6)

    def train_step(self, batch, state):
        inputs, targets = batch
        loss = (self.model(inputs) - targets).pow(2).mean()
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return torch.stack([loss.detach(), 2 * loss.detach()])

    def log_values(self, losses):
        return {"loss": losses[0], "loss/double": losses[1]}

    def evaluate(self, state):
        state["evaluated"].append(state["step"])

    def checkpoint_state(self, state):
        return {"step": state["step"], "evaluated": list(state["evaluated"])}


def toy_run(run_dir, resume=False, max_steps=8):
    """Train `ToyLoop` in `run_dir` (resuming from its last checkpoint); returns the final state."""
    from transformers import get_scheduler

    args = LoopArguments(max_steps=max_steps, batch_size=4, logging_steps=2, save_steps=3, keep_checkpoints=2,
                         warmup_steps=2, resume=resume, cpu=True)
    accelerator = make_accelerator(args, run_dir)
    checkpoint = check_run_dir(args, run_dir, "toy_config.json", "toy run", "another folder", lambda saved: None,
                               accelerator)
    write_run_config(run_dir, "toy_config.json", {"training": {}}, "toy", accelerator)
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(20, 3), torch.randn(20, 1))  # 5 batches an epoch: runs cross epochs
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, args.warmup_steps, args.max_steps)
    prepared = accelerator.prepare(model, optimizer, DataLoader(data, batch_size=4), scheduler)
    loop = ToyLoop(args, accelerator, prepared[0], prepared[1], prepared[3], None, prepared[2], None, run_dir)
    state = loop.run(loop.start({"step": 0, "evaluated": []}, checkpoint, {}))
    accelerator.end_training()
    return state


def test_the_loop_logs_evaluates_and_checkpoints_on_schedule(tmp_path):
    state = toy_run(tmp_path / "run")
    assert state["step"] == 8 and state["evaluated"] == [3, 6]
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ['{"step": 2', '{"step": 4', '{"step": 6', '{"step": 8']
    assert '"loss/double"' in lines[0] and '"lr"' in lines[0]
    checkpoints = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-00000006", "step-00000008"]  # step 3 rotated out


def test_a_resumed_loop_repeats_the_uninterrupted_one(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    toy_run(reference)
    shutil.copytree(reference, resumed)
    # Killed after the log line of step 8 but before its checkpoint: the run resumes mid-epoch
    # from step 6 and logs step 8 again.
    shutil.rmtree(resumed / "checkpoints" / "step-00000008")
    state = toy_run(resumed, resume=True)
    assert state["evaluated"] == [3, 6]  # 3 restored from the checkpoint, 6 not repeated
    assert (resumed / "log.jsonl").read_bytes() == (reference / "log.jsonl").read_bytes()
    final = "checkpoints/step-00000008/model.safetensors"
    assert (resumed / final).read_bytes() == (reference / final).read_bytes()


@pytest.mark.parametrize("disk_full", [
    OSError(errno.ENOSPC, "No space left on device"),
    SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
])
def test_a_full_disk_during_a_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch, disk_full):
    save_state = Accelerator.save_state

    def fill_the_disk(self, output_dir, **kwargs):
        if output_dir.endswith("step-00000006"):
            Path(output_dir).mkdir(parents=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
            raise disk_full
        return save_state(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", fill_the_disk)
    checkpoints = tmp_path / "run" / "checkpoints"
    with pytest.raises(OSError, match=rf"checkpoint step-00000006 in {checkpoints} .*No space left on device.*"
                                      r"\d+ MiB are free there.*last good checkpoint step-00000003 is kept"):
        toy_run(tmp_path / "run")
    assert sorted(path.name for path in checkpoints.iterdir()) == ["step-00000003"]  # no .tmp-step-00000006
    assert latest_checkpoint(tmp_path / "run").name == "step-00000003"
    monkeypatch.undo()  # space freed: the run resumes from step 3 and finishes
    assert toy_run(tmp_path / "run", resume=True)["step"] == 8


def test_a_run_folder_is_not_overwritten(tmp_path):
    toy_run(tmp_path / "run", max_steps=3)
    with pytest.raises(ValueError, match=r"already holds a toy run \(toy_config.json\); pass --resume to continue it "
                                         r"or choose another folder\."):
        toy_run(tmp_path / "run")
    assert latest_checkpoint(tmp_path / "run").name == "step-00000003"


@pytest.mark.parametrize("stage, arguments, instead, check", STAGES)
def test_resume_refuses_every_run_defining_argument_changed(stage, arguments, instead, check, tmp_path):
    assert set(stage.RUN_IDENTITY) <= {field.name for field in fields(arguments)}
    for folder in "ab":  # path arguments compare by the folder they name, when it exists
        (tmp_path / folder).mkdir()
    training = {name: "a" for name in stage.RUN_IDENTITY}
    saved = {"search_space": {}, "teacher": "teacher", "architecture": "arch", "training": training,
             "masked_inputs": False}
    check(saved, {**saved, "training": dict(training)}, tmp_path)
    for name in stage.RUN_IDENTITY:
        with pytest.raises(ValueError, match=rf"started with {name}='a', now {name}='b'; resume with the same value "
                                             rf"\(or {instead}\)\."):
            check(saved, {**saved, "training": {**training, name: "b"}}, tmp_path)
    # So are the inputs: a run on the text itself does not resume on masked text.
    with pytest.raises(ValueError, match=rf"trained on unmasked text, this one would be on BERT-masked text; {instead}"):
        check(saved, {**saved, "masked_inputs": True}, tmp_path)


def test_the_stages_redeclare_a_loop_argument_only_to_change_it():
    shared = {field.name: field for field in fields(LoopArguments)}
    stages = [{field.name: field for field in fields(arguments)} for arguments in (SupernetTrainingArguments,
                                                                                    DistillArguments)]
    for own in stages:
        for name, field in shared.items():
            assert own[name] is field or (own[name].default, own[name].metadata) != (field.default, field.metadata)
    # A field both stages declare alike belongs in LoopArguments.
    supernet, distillation = (
        {name: (field.type, field.default, dict(field.metadata)) for name, field in own.items() if name not in shared}
        for own in stages
    )
    assert not [name for name in supernet if supernet[name] == distillation.get(name)]
    assert DistillArguments().learning_rate == 3e-4 and SupernetTrainingArguments().learning_rate == 1e-3
