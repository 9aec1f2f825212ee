import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nasbert_hf import Architecture, NasBertConfig, NasBertModel, count_flops, count_params

CONFIGS = [
    dict(hidden_size=64, layers=["mha:4", "ffn:128"]),
    dict(hidden_size=96, embedding_size=32, layers=["conv:3", "id", "mha:3", "conv:7", "ffn:50"]),
    dict(hidden_size=128, layers=["id", "conv:5"]),
    dict(hidden_size=48, embedding_projection=True, layers=["mha:2", "ffn:64"]),
]


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_param_count_is_exact(kwargs):
    config = NasBertConfig(vocab_size=321, max_position_embeddings=33, **kwargs)
    model = NasBertModel(config)
    assert count_params(config) == sum(p.numel() for p in model.parameters())
    body = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("embeddings."))
    assert count_params(config, embeddings=False) == body
    no_pool = NasBertModel(config, add_pooling_layer=False)
    assert count_params(config, pooler=False) == sum(p.numel() for p in no_pool.parameters())


@pytest.mark.parametrize("kwargs", CONFIGS)
@pytest.mark.parametrize("seq_len, batch", [(16, 1), (24, 3)])
def test_flops_match_torch_flop_counter(kwargs, seq_len, batch):
    config = NasBertConfig(vocab_size=321, max_position_embeddings=33, **kwargs)
    model = NasBertModel(config).eval()
    counter = FlopCounterMode(display=False)
    # output_attentions=True runs attention as explicit matmuls, which the counter sees on every backend.
    with counter, torch.no_grad():
        model(torch.randint(0, 321, (batch, seq_len)), output_attentions=True)
    assert count_flops(config, seq_len=seq_len, batch_size=batch) == counter.get_total_flops()


def test_costs_accept_architectures():
    arch = Architecture(64, ("mha:4", "ffn:128"))
    config = arch.to_config()
    assert count_params(arch) == count_params(config)
    assert count_flops(arch, 32) == count_flops(config, 32)
    with pytest.raises(TypeError, match="NasBertConfig or an Architecture"):
        count_params({"hidden_size": 64})
