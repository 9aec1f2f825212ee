"""NasBert: BERT's embeddings and heads around a stack of searched op slots.

Depends on torch and transformers only, so that this file and `configuration_nasbert.py`
can be copied next to a saved model and loaded with `trust_remote_code=True`.

Every op module is *elastic* in the once-for-all sense: it owns its weights at full width
and computes with the leading slice that matches the width of its input (and, for
attention and feed-forward, its `num_heads` / `inner_size` attribute). A standalone model
always uses the full slice; the supernet of `nasbert_hf` builds the same modules at their
largest width and samples sub-networks by setting those attributes, so a sampled path
runs exactly the code of the standalone model it exports to.

Slots may differ in width (`config.layer_hidden_sizes`); between two slots the state is
resized without parameters (`resize_hidden`: leading coordinates kept, or zeros appended).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from .configuration_nasbert import NasBertConfig, parse_attention, parse_op


def sliced_linear(x, layer, out_features=None):
    """`layer` applied with the leading `[:out, :in]` slice of its weight; `in` is `x`'s width."""
    if out_features in (None, layer.out_features) and x.shape[-1] == layer.in_features:
        # Full width: call the module itself, so replaced modules (e.g. torch.ao int8 Linear) work.
        return layer(x)
    out_features = layer.out_features if out_features is None else out_features
    bias = None if layer.bias is None else layer.bias[:out_features]
    return F.linear(x, layer.weight[:out_features, : x.shape[-1]], bias)


def sliced_layer_norm(x, norm):
    width = x.shape[-1]
    return F.layer_norm(x, (width,), norm.weight[:width], norm.bias[:width], norm.eps)


def resize_hidden(hidden_states, width):
    """`hidden_states` at `width` features: the leading `width` coordinates, or zeros appended.

    The link between slots of different widths has no parameters on purpose: the supernet's
    blocks read and write nested (principal-component) coordinates, for which truncating or
    zero-padding is exact."""
    current = hidden_states.shape[-1]
    if current == width:
        return hidden_states
    if current > width:
        return hidden_states[..., :width]
    return F.pad(hidden_states, (0, width - current))


class NasBertOp(nn.Module):
    """A post-LN residual sub-layer: `LayerNorm(x + dropout(transform(x)))`, as in BERT.

    Built at `hidden` features (its slot's width); computes at its input's width (a leading slice)."""

    def __init__(self, config, hidden):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, key_mask=None, output_attentions=False):
        update, attentions = self.transform(hidden_states, key_mask, output_attentions)
        return sliced_layer_norm(hidden_states + self.dropout(update), self.LayerNorm), attentions

    def transform(self, hidden_states, key_mask, output_attentions):
        raise NotImplementedError


class NasBertAttention(NasBertOp):
    """Multi-head self-attention: `mha:H` (H heads of `width / H` dims) or `mha:HxD` (H heads of D
    dims, e.g. some of a teacher's heads at the teacher's head size). The query, key and value
    rows are laid out head after head, so fewer heads are a leading slice."""

    def __init__(self, config, num_heads, hidden, head_size=None):
        super().__init__(config, hidden)
        self.num_heads = num_heads
        self.head_size = head_size
        inner = hidden if head_size is None else num_heads * head_size
        self.query = nn.Linear(hidden, inner)
        self.key = nn.Linear(hidden, inner)
        self.value = nn.Linear(hidden, inner)
        self.output = nn.Linear(inner, hidden)
        self.attention_dropout = config.attention_probs_dropout_prob

    def transform(self, hidden_states, key_mask, output_attentions):
        batch, length, width = hidden_states.shape
        head_size = self.head_size or width // self.num_heads
        inner = self.num_heads * head_size
        shape = (batch, length, self.num_heads, head_size)
        q, k, v = (
            sliced_linear(hidden_states, layer, inner).view(shape).transpose(1, 2)
            for layer in (self.query, self.key, self.value)
        )
        mask = None if key_mask is None else key_mask[:, None, None, :]
        dropout = self.attention_dropout if self.training else 0.0
        if output_attentions:
            # SDPA does not return the probabilities; compute them explicitly when asked.
            scores = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(-1)
            context = F.dropout(probs, dropout, self.training) @ v
        else:
            probs = None
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(batch, length, inner)
        return sliced_linear(context, self.output, width), probs


class NasBertFeedForward(NasBertOp):
    """Position-wise feed-forward (`ffn:D`): `dense(D -> hidden)(act(dense(hidden -> D)))`."""

    def __init__(self, config, inner_size, hidden):
        super().__init__(config, hidden)
        self.inner_size = inner_size
        self.intermediate = nn.Linear(hidden, inner_size)
        self.output = nn.Linear(inner_size, hidden)
        self.act = ACT2FN[config.hidden_act]

    def transform(self, hidden_states, key_mask, output_attentions):
        inner = self.act(sliced_linear(hidden_states, self.intermediate, self.inner_size))
        return sliced_linear(inner, self.output, hidden_states.shape[-1]), None


class NasBertSeparableConv(NasBertOp):
    """Separable 1-D convolution over the sequence (`conv:K`): depthwise kernel K, then pointwise.

    Padded positions are zeroed before the convolution so they never leak into real tokens.
    """

    def __init__(self, config, kernel_size, hidden):
        super().__init__(config, hidden)
        self.kernel_size = kernel_size
        self.depthwise = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden)
        self.pointwise = nn.Linear(hidden, hidden)
        self.act = ACT2FN[config.hidden_act]

    def transform(self, hidden_states, key_mask, output_attentions):
        width = hidden_states.shape[-1]
        x = hidden_states if key_mask is None else hidden_states * key_mask[..., None].to(hidden_states.dtype)
        x = F.conv1d(
            x.transpose(1, 2),
            self.depthwise.weight[:width],
            self.depthwise.bias[:width],
            padding=self.kernel_size // 2,
            groups=width,
        ).transpose(1, 2)
        return self.act(sliced_linear(x, self.pointwise, width)), None


class NasBertIdentity(nn.Module):
    """The empty op (`id`): the slot passes its input through."""

    def forward(self, hidden_states, key_mask=None, output_attentions=False):
        return hidden_states, None


OP_CLASSES = {
    "mha": lambda config, size, hidden, code: NasBertAttention(config, size, hidden, parse_attention(code)[1]),
    "ffn": lambda config, size, hidden, code: NasBertFeedForward(config, size, hidden),
    "conv": lambda config, size, hidden, code: NasBertSeparableConv(config, size, hidden),
    "id": lambda config, size, hidden, code: NasBertIdentity(),
}


def build_op(code, config, hidden_size=None):
    """The module for one op code, e.g. `build_op("conv:5", config)`, built at `hidden_size`
    features (default `config.hidden_size`; the encoder passes each slot's own width)."""
    kind, size = parse_op(code)
    return OP_CLASSES[kind](config, size, config.hidden_size if hidden_size is None else hidden_size, code)


class NasBertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm and dropout, with a projection to the
    first slot's width when `embedding_size` differs (embeddings dominate the size of small models)
    or when the config asks for one (`embedding_projection`).

    `config.embedding_factorization` says what is `embedding_size` wide: every table, with the
    projection after the LayerNorm (`"all"`), or only the word table, projected before the sum with
    position and token-type tables at the slot's width (`"word"`: a factorised teacher table)."""

    def __init__(self, config):
        super().__init__()
        size, first = config.embedding_size, config.slot_hidden_sizes[0]
        self.factorize_words_only = config.embedding_factorization == "word"
        table = first if self.factorize_words_only else size
        self.word_embeddings = nn.Embedding(config.vocab_size, size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, table)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, table)
        self.LayerNorm = nn.LayerNorm(table, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.projection = nn.Linear(size, first) if config.has_embedding_projection else None

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        length = inputs_embeds.shape[1]
        if position_ids is None:
            self._check_length(length)
            position_ids = torch.arange(length, device=inputs_embeds.device)[None]
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        if self.factorize_words_only and self.projection is not None:
            inputs_embeds = self.projection(inputs_embeds)
        embeddings = inputs_embeds + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = self.dropout(self.LayerNorm(embeddings))
        return embeddings if self.factorize_words_only or self.projection is None else self.projection(embeddings)

    def _check_length(self, length):
        # Without this, a too-long input fails deep in nn.Embedding with "index out of range in self".
        # Skipped while exporting or tracing, where the length is symbolic and the graph must not branch.
        if torch.compiler.is_exporting() or torch.jit.is_tracing():
            return
        maximum = self.position_embeddings.num_embeddings
        if length > maximum:
            raise ValueError(
                f"Input of {length} tokens is longer than this model's maximum of {maximum} positions "
                "(max_position_embeddings); tokenise with truncation=True (and max_length) to cut it."
            )


class NasBertEncoder(nn.Module):
    """The op slots in order, each at its own width; a state entering a slot of another width is
    resized first (`resize_hidden`), so every slot's output is at that slot's width."""

    def __init__(self, config):
        super().__init__()
        self.widths = config.slot_hidden_sizes
        self.layers = nn.ModuleList(build_op(code, config, width) for code, width in zip(config.layers, self.widths))

    def forward(self, hidden_states, key_mask=None, output_attentions=False, output_hidden_states=False):
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer, width in zip(self.layers, self.widths):
            hidden_states, attentions = layer(resize_hidden(hidden_states, width), key_mask, output_attentions)
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions and attentions is not None:
                all_attentions += (attentions,)
        return hidden_states, all_hidden, all_attentions


class NasBertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return torch.tanh(self.dense(hidden_states[:, 0]))


class NasBertPreTrainedModel(PreTrainedModel):
    config_class = NasBertConfig
    base_model_prefix = "nasbert"
    supports_gradient_checkpointing = False
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, NasBertLMHead):
            init.zeros_(module.bias)


def key_mask_from(attention_mask):
    """Boolean `(batch, seq)` mask of real tokens, or `None` when nothing is padded (faster kernels).

    While exporting (ONNX, torch.export) the mask is always kept: the graph must serve padded batches."""
    if attention_mask is None or (not torch.compiler.is_exporting() and bool(attention_mask.all())):
        return None
    return attention_mask.bool()


class NasBertModel(NasBertPreTrainedModel):
    """The bare NasBert encoder; returns a `BaseModelOutputWithPooling`.

    `hidden_states` has one entry for the embeddings and one per op slot, each at its slot's width
    (the embeddings' at the first slot's); `attentions` has one entry per `mha` slot.
    """

    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = NasBertEmbeddings(config)
        self.encoder = NasBertEncoder(config)
        self.pooler = NasBertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`.")
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        embeddings = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        sequence_output, hidden_states, attentions = self.encoder(
            embeddings, key_mask_from(attention_mask), output_attentions, output_hidden_states
        )
        pooled = self.pooler(sequence_output) if self.pooler is not None else None
        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence_output, pooler_output=pooled, hidden_states=hidden_states, attentions=attentions
        )
        return output if return_dict is not False else output.to_tuple()


class NasBertLMHead(nn.Module):
    """BERT's MLM head: transform (dense, act, LayerNorm) to the embedding size, then the decoder
    tied to the word embeddings."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size, bias=True)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, hidden_states):
        return self.decoder(self.LayerNorm(self.act(self.dense(hidden_states))))


class NasBertWithHead(NasBertPreTrainedModel):
    """Shared plumbing of the task heads: the base model, a dropout, the loss and the output wrapping.

    A head defines `predict(outputs) -> dict of logits fields`, `compute_loss(labels, **fields)`
    and `output_class`; `forward` is the same for all of them.
    """

    add_pooling_layer = False
    output_class = None

    def __init__(self, config):
        super().__init__(config)
        self.nasbert = NasBertModel(config, add_pooling_layer=self.add_pooling_layer)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
        labels=None, return_dict=None, **kwargs,
    ):
        outputs = self.nasbert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        fields = self.predict(outputs)
        loss = self.compute_loss(labels, **fields) if labels is not None else None
        output = self.output_class(loss=loss, hidden_states=outputs.hidden_states, attentions=outputs.attentions, **fields)
        return output if return_dict is not False else output.to_tuple()


class NasBertForMaskedLM(NasBertWithHead):
    output_class = MaskedLMOutput
    _tied_weights_keys = {
        "cls.decoder.weight": "nasbert.embeddings.word_embeddings.weight",
        "cls.decoder.bias": "cls.bias",
    }

    def __init__(self, config):
        super().__init__(config)
        self.cls = NasBertLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.decoder = new_embeddings
        self.cls.bias = new_embeddings.bias

    def predict(self, outputs):
        return {"logits": self.cls(outputs.last_hidden_state)}

    def compute_loss(self, labels, logits):
        return self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size)


class NasBertClassifier(NasBertWithHead):
    """A linear classifier (after dropout) over the features named by `features`."""

    features = "last_hidden_state"

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def predict(self, outputs):
        return {"logits": self.classifier(self.dropout(getattr(outputs, self.features)))}


class NasBertForSequenceClassification(NasBertClassifier):
    """Pooled first token -> dropout -> linear; regression when `num_labels == 1`, as in BERT."""

    output_class = SequenceClassifierOutput
    add_pooling_layer = True
    features = "pooler_output"

    def compute_loss(self, labels, logits):
        return self.loss_function(labels=labels, pooled_logits=logits, config=self.config)


class NasBertForTokenClassification(NasBertClassifier):
    output_class = TokenClassifierOutput

    def compute_loss(self, labels, logits):
        return self.loss_function(logits=logits, labels=labels, config=self.config)


class NasBertForQuestionAnswering(NasBertWithHead):
    """Start and end logits over the tokens; trained with `start_positions` and `end_positions`."""

    output_class = QuestionAnsweringModelOutput

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
        start_positions=None, end_positions=None, return_dict=None, **kwargs,
    ):
        # Named arguments, not *args: Trainer reads this signature to pick the dataset columns and labels.
        both = start_positions is not None and end_positions is not None
        return super().forward(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            labels=(start_positions, end_positions) if both else None, return_dict=return_dict, **kwargs,
        )

    def predict(self, outputs):
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).split(1, dim=-1)
        return {"start_logits": start_logits.squeeze(-1).contiguous(), "end_logits": end_logits.squeeze(-1).contiguous()}

    def compute_loss(self, labels, start_logits, end_logits):
        return self.loss_function(start_logits, end_logits, *labels)


__all__ = [
    "NasBertPreTrainedModel",
    "NasBertModel",
    "NasBertForMaskedLM",
    "NasBertForSequenceClassification",
    "NasBertForTokenClassification",
    "NasBertForQuestionAnswering",
    "build_op",
    "resize_hidden",
]
