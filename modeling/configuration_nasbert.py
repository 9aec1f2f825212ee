"""NasBert configuration: a hidden size plus one op code per slot.

Depends on `transformers` only, so that this file and `modeling_nasbert.py` can
be copied next to a saved model and loaded with `trust_remote_code=True`.
"""

from transformers import PretrainedConfig

OP_TYPES = ("mha", "ffn", "conv", "id")

# How an embedding narrower than the first slot is factorised: "all" (the first design: every table
# E wide, a LayerNorm at E, then one projection to the slot's width) or "word" (only the word table
# is E wide and projected; positions, token types and the LayerNorm are at the slot's width, as a
# teacher's embedding with a factorised word table is).
EMBEDDING_FACTORIZATIONS = ("all", "word")

# Every saved config names all the Auto classes, whichever head was saved, so that
# `AutoModel*.from_pretrained(dir, trust_remote_code=True)` finds the code copied beside it.
AUTO_MAP = {
    "AutoConfig": "configuration_nasbert.NasBertConfig",
    "AutoModel": "modeling_nasbert.NasBertModel",
    "AutoModelForMaskedLM": "modeling_nasbert.NasBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_nasbert.NasBertForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_nasbert.NasBertForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_nasbert.NasBertForQuestionAnswering",
}

# The default is BERT-base as 24 slots: (mha:12, ffn:3072) x 12.
DEFAULT_LAYERS = ("mha:12", "ffn:3072") * 12


def parse_op(code):
    """Split an op code into `(op_type, size)`: `"mha:4" -> ("mha", 4)`, `"mha:6x32" -> ("mha", 6)`,
    `"id" -> ("id", 0)`. For attention the size is the head count (`parse_attention` gives the head size).

    Raises `ValueError` naming the code and the valid forms.
    """
    return _split_op(code)[:2]


def parse_attention(code):
    """`(num_heads, head_size)` of an `mha` code: `"mha:6x32" -> (6, 32)`; `"mha:4" -> (4, None)`, where
    the head size is the slot's width divided by the head count."""
    kind, heads, head_size = _split_op(code)
    if kind != "mha":
        raise ValueError(f"Op code {code!r} is not an attention op ('mha:H' or 'mha:HxD').")
    return heads, head_size


def _split_op(code):
    if not isinstance(code, str):
        raise ValueError(f"Op code {code!r} must be a string like 'mha:4', 'mha:6x32', 'ffn:1024', 'conv:3' or 'id'.")
    kind, sep, arg = code.partition(":")
    if kind == "id" and not sep:
        return "id", 0, None
    size, times, head_size = arg.partition("x")
    valid = size.isdigit() and int(size) > 0 and (not times or (kind == "mha" and head_size.isdigit()
                                                                and int(head_size) > 0))
    if kind not in OP_TYPES or kind == "id" or not valid:
        raise ValueError(
            f"Unknown op code {code!r}: expected 'mha:H' (H heads of width/H dims), 'mha:HxD' (H heads of D dims, "
            "e.g. a teacher's own heads), 'ffn:D' (inner size D), 'conv:K' (odd kernel K) or 'id', with H, D, K "
            "positive integers."
        )
    return kind, int(size), int(head_size) if times else None


def validate_layers(layers, hidden_size):
    """Check an op-code list against the slots' widths; raise `ValueError` naming the first problem.

    `hidden_size` is one width for every slot or a sequence of one width per slot: `mha:H`
    must divide the width of its own slot.
    """
    if not layers:
        raise ValueError("`layers` is empty: a NasBert model needs at least one op slot (e.g. ['mha:4', 'ffn:1024']).")
    widths = slot_widths(layers, hidden_size)
    for index, (code, width) in enumerate(zip(layers, widths)):
        kind, size = parse_op(code)
        if kind == "mha" and parse_attention(code)[1] is None and width % size:
            raise ValueError(
                f"Slot {index} ({code!r}): hidden size {width} is not divisible by {size} heads; "
                f"valid head counts divide {width}."
            )
        if kind == "conv" and size % 2 == 0:
            raise ValueError(
                f"Slot {index} ({code!r}): conv kernel {size} is even; use an odd kernel (3, 5, 7) "
                "so the output keeps the sequence length."
            )


def slot_widths(layers, hidden_size):
    """`hidden_size` (one int, or one int per slot) as a tuple of one checked width per slot."""
    if isinstance(hidden_size, int) and not isinstance(hidden_size, bool):
        if hidden_size <= 0:
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}.")
        widths = (hidden_size,) * len(layers)
    elif isinstance(hidden_size, (str, bytes)) or not hasattr(hidden_size, "__len__"):
        raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}.")
    else:
        widths = tuple(hidden_size)
        if len(widths) != len(layers):
            slot = min(len(widths), len(layers))
            missing = (
                f"slot {slot} ({layers[slot]!r}) has no width" if slot < len(layers) else f"there is no slot {slot}"
            )
            raise ValueError(
                f"layer_hidden_sizes has {len(widths)} widths for {len(layers)} slots: {missing}; "
                "give exactly one width per slot."
            )
    for index, width in enumerate(widths):
        if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
            raise ValueError(f"Slot {index}: hidden size must be a positive integer, got {width!r}.")
    return widths


class NasBertConfig(PretrainedConfig):
    r"""Configuration of a NasBert model: BERT's embeddings and heads around a stack of searched op slots.

    Args:
        vocab_size (`int`, defaults to 30522): size of the token vocabulary.
        hidden_size (`int`, defaults to 768): width of the model's output (what the pooler and heads
            read), and of every op slot unless `layer_hidden_sizes` says otherwise.
        layers (`list[str]`): one op code per slot, applied in order: `"mha:H"` multi-head self-attention
            with H heads of `width / H` dims, `"mha:HxD"` with H heads of D dims (a teacher's own heads), `"ffn:D"` feed-forward with inner size D, `"conv:K"` separable 1-D convolution
            with (odd) kernel K, `"id"` identity. Every op but `id` is a post-LN residual sub-layer.
        layer_hidden_sizes (`list[int]`, *optional*): one width per slot, when the width changes from
            slot to slot (as in the NAS-BERT paper); the last must equal `hidden_size`. Between slots of
            different widths the state keeps its leading coordinates or is zero-padded at the end
            (`resize_hidden`, no parameters). `None` (the default): every slot is `hidden_size` wide.
        embedding_size (`int`, *optional*): width of the token embeddings; when it differs from the
            first slot's width a linear projection maps embeddings to that width. Defaults to `hidden_size`.
        embedding_projection (`bool`, *optional*): force the embedding projection on (or off, only
            possible when the sizes are equal). Defaults to "when `embedding_size` differs from the first
            slot's width";
            models exported from a supernet always have one (block 0 reads a projection of the embeddings).
        embedding_factorization (`str`, defaults to `"all"`): what the projection factorises. `"all"`: every
            table is `embedding_size` wide, with a LayerNorm at that width, then the projection. `"word"`: only
            the word table is `embedding_size` wide; its projection is added to position and token-type tables
            at the first slot's width, then a LayerNorm at that width (a teacher's embedding with a factorised
            word table; with `embedding_size` equal to the width it is the teacher's embedding exactly).
        hidden_act (`str`, defaults to `"gelu"`): activation of `ffn` and `conv` ops and of the MLM head.
        hidden_dropout_prob, attention_probs_dropout_prob (`float`): dropout probabilities as in BERT.
        max_position_embeddings, type_vocab_size, layer_norm_eps, initializer_range, classifier_dropout:
            as in `BertConfig`.
    """

    model_type = "nasbert"

    def __init__(
        self,
        vocab_size=30522,
        hidden_size=768,
        layers=DEFAULT_LAYERS,
        embedding_size=None,
        embedding_projection=None,
        embedding_factorization="all",
        layer_hidden_sizes=None,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        classifier_dropout=None,
        tie_word_embeddings=True,
        **kwargs,
    ):
        auto_map = {**AUTO_MAP, **(kwargs.pop("auto_map", None) or {})}
        super().__init__(pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.auto_map = auto_map
        layers = list(layers)
        if layer_hidden_sizes is not None:
            layer_hidden_sizes = list(layer_hidden_sizes)
        validate_layers(layers, hidden_size if layer_hidden_sizes is None else layer_hidden_sizes)
        if layer_hidden_sizes is not None and layer_hidden_sizes[-1] != hidden_size:
            raise ValueError(
                f"hidden_size ({hidden_size}) must equal the last of layer_hidden_sizes "
                f"({layer_hidden_sizes[-1]}): it is the width the pooler and heads read."
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.layers = layers
        self.layer_hidden_sizes = layer_hidden_sizes
        self.embedding_size = embedding_size if embedding_size is not None else hidden_size
        first = self.slot_hidden_sizes[0]
        if embedding_projection is False and self.embedding_size != first:
            raise ValueError(
                "embedding_projection=False needs embedding_size == the first slot's hidden size; "
                f"got {self.embedding_size} and {first}."
            )
        self.embedding_projection = embedding_projection
        if embedding_factorization not in EMBEDDING_FACTORIZATIONS:
            raise ValueError(
                f"embedding_factorization={embedding_factorization!r}: expected one of {list(EMBEDDING_FACTORIZATIONS)}."
            )
        self.embedding_factorization = embedding_factorization
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.classifier_dropout = classifier_dropout
        self.tie_word_embeddings = tie_word_embeddings

    @property
    def slot_hidden_sizes(self):
        """The width of every slot, in order (`hidden_size` for each when `layer_hidden_sizes` is unset)."""
        if self.layer_hidden_sizes is None:
            return (self.hidden_size,) * len(self.layers)
        return tuple(self.layer_hidden_sizes)

    @property
    def has_embedding_projection(self):
        """Whether a linear layer maps the embeddings to the first slot's width."""
        if self.embedding_projection is None:
            return self.embedding_size != self.slot_hidden_sizes[0]
        return bool(self.embedding_projection)

    @property
    def num_hidden_layers(self):
        # Generic transformers utilities read this; every slot produces one hidden state.
        return len(self.layers)


__all__ = ["NasBertConfig", "parse_op", "parse_attention", "validate_layers", "slot_widths", "OP_TYPES",
           "EMBEDDING_FACTORIZATIONS"]
