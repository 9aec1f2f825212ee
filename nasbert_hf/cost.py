"""Exact cost models of a NasBert architecture: parameter count and FLOPs.

FLOPs follow `torch.utils.flop_counter`'s convention, 2 per multiply-accumulate of every matrix
multiplication, attention product and convolution; element-wise work (LayerNorm, softmax, GELU,
residual adds) and embedding lookups are not counted. The tests check both numbers against the
real modules (`sum(p.numel())` and `FlopCounterMode`).
"""

from .architecture import Architecture
from .modeling import NasBertConfig, parse_op


def _as_config(config_or_arch):
    if isinstance(config_or_arch, Architecture):
        return config_or_arch.to_config()
    if isinstance(config_or_arch, NasBertConfig):
        return config_or_arch
    raise TypeError(f"Expected a NasBertConfig or an Architecture, got {type(config_or_arch).__name__}.")


def op_params(code, hidden):
    """Parameters of one op slot at hidden size `hidden` (its LayerNorm included)."""
    kind, size = parse_op(code)
    norm = 2 * hidden
    if kind == "mha":
        return 4 * (hidden * hidden + hidden) + norm
    if kind == "ffn":
        return hidden * size + size + size * hidden + hidden + norm
    if kind == "conv":
        return hidden * size + hidden + hidden * hidden + hidden + norm
    return 0


def op_flops(code, hidden, seq_len):
    """FLOPs of one op slot for one sequence of `seq_len` tokens."""
    kind, size = parse_op(code)
    if kind == "mha":
        # q, k, v, output projections + the two attention products (scores and context).
        return 4 * 2 * seq_len * hidden * hidden + 2 * 2 * seq_len * seq_len * hidden
    if kind == "ffn":
        return 2 * 2 * seq_len * hidden * size
    if kind == "conv":
        return 2 * seq_len * hidden * size + 2 * seq_len * hidden * hidden
    return 0


def embedding_params(config):
    """Parameters of the embeddings module: tables, LayerNorm, and the projection to the first slot's width."""
    size = config.embedding_size
    first = config.slot_hidden_sizes[0]
    tables = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * size
    projection = size * first + first if config.has_embedding_projection else 0
    return tables + 2 * size + projection


def count_params(config, embeddings=True, pooler=True):
    """Parameters of `NasBertModel(config)`; `embeddings=False` leaves out the embeddings module
    (tables, LayerNorm and projection), `pooler=False` the pooler. Each slot counts at its own
    width; the links between widths have no parameters."""
    config = _as_config(config)
    hidden = config.hidden_size
    total = sum(op_params(code, width) for code, width in zip(config.layers, config.slot_hidden_sizes))
    if embeddings:
        total += embedding_params(config)
    if pooler:
        total += hidden * hidden + hidden
    return total


def count_flops(config, seq_len=128, batch_size=1, pooler=True):
    """FLOPs of one forward pass of `NasBertModel(config)` on `batch_size` sequences of `seq_len`.

    Each slot counts at its own width; resizing between widths (slicing, zero-padding) costs none."""
    config = _as_config(config)
    hidden = config.hidden_size
    widths = config.slot_hidden_sizes
    per_sequence = sum(op_flops(code, width, seq_len) for code, width in zip(config.layers, widths))
    if config.has_embedding_projection:
        per_sequence += 2 * seq_len * config.embedding_size * widths[0]
    if pooler:
        per_sequence += 2 * hidden * hidden
    return batch_size * per_sequence


class CostModel:
    """An additive cost: `cost(arch) = base_cost(H) + sum(op_cost(code, H) for code in arch.layers)`.

    Parameters, FLOPs and table-predicted latency all have this form, which is what lets the
    search add up per-block costs exactly.
    """

    metric = "cost"
    unit = ""

    def op_cost(self, code, hidden_size):
        raise NotImplementedError

    def base_cost(self, hidden_size):
        raise NotImplementedError

    def layers_cost(self, layers, hidden_size):
        return sum(self.op_cost(code, hidden_size) for code in layers)

    def cost(self, arch):
        return self.base_cost(arch.hidden_size) + self.layers_cost(arch.layers, arch.hidden_size)


class ParamsCost(CostModel):
    """Non-embedding parameters: the op slots only. Embedding tables are a lookup that costs no
    compute and is shared with the teacher's vocabulary, so budgets leave them out (model cards
    report the total as well)."""

    metric = "params"

    def op_cost(self, code, hidden_size):
        return op_params(code, hidden_size)

    def base_cost(self, hidden_size):
        return 0


class FlopsCost(CostModel):
    """FLOPs of one `NasBertModel` forward pass on one sequence of `seq_len` tokens."""

    metric = "flops"

    def __init__(self, seq_len=128, embedding_size=None):
        self.seq_len = seq_len
        self.embedding_size = embedding_size

    def op_cost(self, code, hidden_size):
        return op_flops(code, hidden_size, self.seq_len)

    def base_cost(self, hidden_size):
        embedding_size = self.embedding_size or hidden_size
        # An architecture with only an identity slot costs exactly the embedding projection and the pooler.
        config = NasBertConfig(hidden_size=hidden_size, embedding_size=embedding_size, layers=["id"])
        return count_flops(config, seq_len=self.seq_len)
