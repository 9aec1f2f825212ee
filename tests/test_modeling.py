import pytest
import torch
from conftest import random_inputs

from nasbert_hf import (
    NasBertConfig,
    NasBertForMaskedLM,
    NasBertForQuestionAnswering,
    NasBertForSequenceClassification,
    NasBertForTokenClassification,
    NasBertModel,
)

LAYERS = ["mha:4", "ffn:96", "conv:3", "id", "conv:5", "mha:2", "ffn:64"]


def small_config(**kwargs):
    defaults = dict(vocab_size=120, hidden_size=64, layers=LAYERS, max_position_embeddings=64, num_labels=3)
    defaults.update(kwargs)
    return NasBertConfig(**defaults)


@pytest.mark.parametrize("code", ["mha:4", "ffn:96", "conv:3", "conv:7", "id"])
def test_each_op_runs_forward_and_backward(code):
    model = NasBertModel(small_config(layers=[code])).train()
    input_ids, attention_mask = random_inputs(120)
    out = model(input_ids, attention_mask=attention_mask)
    assert out.last_hidden_state.shape == (3, 12, 64)
    out.last_hidden_state.sum().backward()
    grads = [p.grad for name, p in model.named_parameters() if "encoder" in name]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if code != "id":
        assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("embedding_size", [64, 32])
@pytest.mark.parametrize(
    "head, labels",
    [
        (NasBertForMaskedLM, lambda ids: {"labels": ids}),
        (NasBertForSequenceClassification, lambda ids: {"labels": torch.tensor([0, 2, 1])}),
        (NasBertForTokenClassification, lambda ids: {"labels": ids % 3}),
        (NasBertForQuestionAnswering, lambda ids: {"start_positions": torch.tensor([1, 2, 3]), "end_positions": torch.tensor([4, 5, 6])}),
    ],
)
def test_heads_forward_backward(head, labels, embedding_size):
    config = small_config(embedding_size=embedding_size, num_labels=2 if head is NasBertForQuestionAnswering else 3)
    model = head(config).train()
    input_ids, attention_mask = random_inputs(120)
    out = model(input_ids, attention_mask=attention_mask, **labels(input_ids))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.nasbert.embeddings.word_embeddings.weight.grad is not None


def test_sequence_regression_uses_mse():
    model = NasBertForSequenceClassification(small_config(num_labels=1)).eval()
    input_ids, attention_mask = random_inputs(120)
    labels = torch.tensor([0.5, -1.0, 2.0])
    out = model(input_ids, attention_mask=attention_mask, labels=labels)
    assert torch.allclose(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), labels))


def test_masked_lm_decoder_is_tied_to_embeddings():
    model = NasBertForMaskedLM(small_config(embedding_size=32))
    assert model.cls.decoder.weight is model.nasbert.embeddings.word_embeddings.weight


def test_padding_does_not_change_real_tokens():
    """A padded row gives the same outputs on its real tokens as the same row unpadded."""
    model = NasBertModel(small_config()).eval()
    input_ids, attention_mask = random_inputs(120, batch=3, length=12)
    with torch.no_grad():
        padded = model(input_ids, attention_mask=attention_mask).last_hidden_state
        for row in range(3):
            real = int(attention_mask[row].sum())
            alone = model(input_ids[row : row + 1, :real]).last_hidden_state[0]
            assert torch.allclose(padded[row, :real], alone, atol=1e-5), row


def test_hidden_states_and_attentions():
    model = NasBertModel(small_config()).eval()
    input_ids, attention_mask = random_inputs(120)
    out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == len(LAYERS) + 1
    assert [a.shape[1] for a in out.attentions] == [4, 2]  # one per mha slot, with its head count
    probs = out.attentions[0]
    assert torch.allclose(probs.sum(-1), torch.ones_like(probs.sum(-1)))
    assert probs[2, :, :, -4:].abs().max() == 0  # padded keys get no attention
    # The explicit-probabilities path computes what the SDPA path computes.
    plain = model(input_ids, attention_mask=attention_mask).last_hidden_state
    assert torch.allclose(out.last_hidden_state, plain, atol=1e-5)


def test_tuple_outputs_when_return_dict_false():
    model = NasBertForSequenceClassification(small_config()).eval()
    input_ids, attention_mask = random_inputs(120)
    logits = model(input_ids, attention_mask=attention_mask, return_dict=False)[0]
    assert torch.equal(logits, model(input_ids, attention_mask=attention_mask).logits)


def test_requires_exactly_one_input():
    model = NasBertModel(small_config())
    with pytest.raises(ValueError, match="exactly one of `input_ids` and `inputs_embeds`"):
        model()


def test_input_longer_than_max_positions_is_a_clear_error():
    model = NasBertModel(small_config()).eval()
    with pytest.raises(ValueError, match=r"65 tokens .* maximum of 64 positions .*truncation=True"):
        model(torch.ones(1, 65, dtype=torch.long))
    assert model(torch.ones(1, 64, dtype=torch.long)).last_hidden_state.shape == (1, 64, 64)
