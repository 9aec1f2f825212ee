"""Exact cost models of a NasBert architecture: parameter count and FLOPs.

FLOPs follow `torch.utils.flop_counter`'s convention, 2 per multiply-accumulate of every matrix
multiplication, attention product and convolution; element-wise work (LayerNorm, softmax, GELU,
residual adds) and embedding lookups are not counted. The tests check both numbers against the
real modules (`sum(p.numel())` and `FlopCounterMode`).
"""

from .architecture import Architecture
from .modeling import NasBertConfig, parse_attention, parse_op


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
        inner = attention_width(code, hidden)
        return 4 * hidden * inner + 3 * inner + hidden + norm
    if kind == "ffn":
        return hidden * size + size + size * hidden + hidden + norm
    if kind == "conv":
        return hidden * size + hidden + hidden * hidden + hidden + norm
    return 0


def attention_width(code, hidden):
    """Query/key/value width of an `mha` op at hidden size `hidden`: heads x head size."""
    heads, head_size = parse_attention(code)
    return hidden if head_size is None else heads * head_size


def op_flops(code, hidden, seq_len):
    """FLOPs of one op slot for one sequence of `seq_len` tokens."""
    kind, size = parse_op(code)
    if kind == "mha":
        # q, k, v, output projections + the two attention products (scores and context).
        inner = attention_width(code, hidden)
        return 4 * 2 * seq_len * hidden * inner + 2 * 2 * seq_len * seq_len * inner
    if kind == "ffn":
        return 2 * 2 * seq_len * hidden * size
    if kind == "conv":
        return 2 * seq_len * hidden * size + 2 * seq_len * hidden * hidden
    return 0


def embedding_params(config):
    """Parameters of the embeddings module: tables, LayerNorm, and the projection to the first slot's width."""
    first = config.slot_hidden_sizes[0]
    return factorized_embedding_params(
        config.vocab_size, config.max_position_embeddings, config.type_vocab_size, config.embedding_size, first,
        config.embedding_factorization, config.has_embedding_projection,
    )


def factorized_embedding_params(vocab_size, max_positions, type_vocab_size, size, first, factorization, projection):
    """Embedding parameters of an `embedding_size` of `size` before a first slot of width `first`
    (`NasBertConfig.embedding_factorization`: "all" or "word"; `projection`: whether it has one)."""
    table = first if factorization == "word" else size
    words = vocab_size * size + (size * first + first if projection else 0)
    return words + (max_positions + type_vocab_size) * table + 2 * table


def exported_projection(factorization, embedding_size, hidden_size):
    """Whether a searched model projects its embedding to the first slot: always when exported from
    principal coordinates ("all": block 0 reads a projection of the embeddings), only when narrower
    for a factorised teacher word table ("word": at the teacher's width it is the teacher's table)."""
    return factorization == "all" or embedding_size != hidden_size


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
    """An additive cost: the embedding (its width and the first slot's width), plus every op at
    its slot's width, plus the head on the last width:

        cost(arch) = embedding_cost(E, widths[0]) + sum(op_cost(code, width)) + head_cost(widths[-1])

    Parameters, FLOPs and table-predicted latency all have this form (links between widths cost
    nothing), which is what lets the search add up per-block costs exactly. `embedding_size` is
    the width used for architectures that name none (models of the first design keep the
    teacher's width).
    """

    metric = "cost"
    unit = ""

    def op_cost(self, code, hidden_size):
        raise NotImplementedError

    def embedding_cost(self, embedding_size, hidden_size):
        return 0

    def head_cost(self, hidden_size):
        return 0

    def layers_cost(self, layers, hidden_size):
        return sum(self.op_cost(code, hidden_size) for code in layers)

    def cost(self, arch):
        widths = arch.widths
        embedding_size = arch.embedding_size or getattr(self, "embedding_size", None) or widths[0]
        ops = sum(self.op_cost(code, width) for code, width in zip(arch.layers, widths))
        return self.embedding_cost(embedding_size, widths[0]) + ops + self.head_cost(widths[-1])


class ParamsCost(CostModel):
    """All parameters of the model `AutoModel` loads (`NasBertModel`: embeddings with their
    projection, op slots, pooler), as the NAS-BERT paper counts them: its NAS-BERT5 holds 5M in
    all, 64-wide embedding included. At small sizes the embedding table is most of the model, so
    a budget that left it out would name a 13M model "nasbert-700K"."""

    metric = "params"

    def __init__(self, vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, embedding_size=None,
                 embedding_factorization="all"):
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.embedding_size = embedding_size
        self.embedding_factorization = embedding_factorization

    def op_cost(self, code, hidden_size):
        return op_params(code, hidden_size)

    def embedding_cost(self, embedding_size, hidden_size):
        return factorized_embedding_params(
            self.vocab_size, self.max_position_embeddings, self.type_vocab_size, embedding_size, hidden_size,
            self.embedding_factorization, exported_projection(self.embedding_factorization, embedding_size, hidden_size),
        )

    def head_cost(self, hidden_size):
        return hidden_size * hidden_size + hidden_size  # the pooler


class BodyParamsCost(CostModel):
    """Parameters of the op slots only (no embeddings, no pooler): the `body_params` budget."""

    metric = "body_params"

    def op_cost(self, code, hidden_size):
        return op_params(code, hidden_size)


class FlopsCost(CostModel):
    """FLOPs of one `NasBertModel` forward pass on one sequence of `seq_len` tokens (embedding
    projection and pooler included; lookups cost none)."""

    metric = "flops"

    def __init__(self, seq_len=128, embedding_size=None, embedding_factorization="all"):
        self.seq_len = seq_len
        self.embedding_size = embedding_size
        self.embedding_factorization = embedding_factorization

    def op_cost(self, code, hidden_size):
        return op_flops(code, hidden_size, self.seq_len)

    def embedding_cost(self, embedding_size, hidden_size):
        if not exported_projection(self.embedding_factorization, embedding_size, hidden_size):
            return 0
        return 2 * self.seq_len * embedding_size * hidden_size

    def head_cost(self, hidden_size):
        return 2 * hidden_size * hidden_size
