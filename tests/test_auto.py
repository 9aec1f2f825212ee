import json

import pytest
import torch
from conftest import assert_loads_without_the_package, random_inputs
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

import nasbert_hf
from nasbert_hf import (
    NasBertConfig,
    NasBertForMaskedLM,
    NasBertForQuestionAnswering,
    NasBertForSequenceClassification,
    NasBertForTokenClassification,
    NasBertModel,
)

HEADS = [
    (NasBertModel, AutoModel, "last_hidden_state"),
    (NasBertForMaskedLM, AutoModelForMaskedLM, "logits"),
    (NasBertForSequenceClassification, AutoModelForSequenceClassification, "logits"),
    (NasBertForTokenClassification, AutoModelForTokenClassification, "logits"),
    (NasBertForQuestionAnswering, AutoModelForQuestionAnswering, "start_logits"),
]


def config(**overrides):
    values = dict(vocab_size=90, hidden_size=48, embedding_size=24, layers=["mha:4", "conv:3", "ffn:80", "id"], num_labels=2)
    return NasBertConfig(**{**values, **overrides})


@pytest.mark.parametrize("model_class, auto_class, field", HEADS)
def test_save_load_round_trip_through_auto(tmp_path, model_class, auto_class, field):
    model = model_class(config()).eval()
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_nasbert.py", "configuration_nasbert.py"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    loaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class
    input_ids, attention_mask = random_inputs(90)
    with torch.no_grad():
        assert torch.equal(getattr(model(input_ids, attention_mask=attention_mask), field),
                           getattr(loaded(input_ids, attention_mask=attention_mask), field))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), NasBertConfig)


def test_any_head_checkpoint_loads_with_any_auto_class(tmp_path):
    NasBertForMaskedLM(config()).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForSequenceClassification",
                             "AutoModelForTokenClassification", "AutoModelForQuestionAnswering"}
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert isinstance(classifier, NasBertForSequenceClassification)


def test_trust_remote_code_without_the_package(tmp_path):
    """A saved model loads through the copied code in a process where `nasbert_hf` cannot be imported."""
    assert_loads_without_the_package(NasBertForSequenceClassification(config()), tmp_path / "model", 90, checks="""
        base = AutoModel.from_pretrained(path, trust_remote_code=True)
        assert type(base).__name__ == "NasBertModel"
    """)


def test_teacher_shaped_ops_load_without_the_package(tmp_path):
    """`mha:HxD` ops and a word-only factorised embedding live in the copied code too."""
    model = NasBertForSequenceClassification(config(layers=["mha:3x8", "ffn:64", "id", "mha:2x8"], embedding_size=8,
                                                    embedding_factorization="word"))
    assert_loads_without_the_package(model, tmp_path / "model", 90)


def test_registration_names_every_auto_class():
    assert nasbert_hf.NasBertConfig.model_type == "nasbert"
    assert AutoConfig.for_model("nasbert", hidden_size=32, layers=["id"]).hidden_size == 32
    for model_class, auto_class, _ in HEADS:
        assert isinstance(auto_class.from_config(config()), model_class)
