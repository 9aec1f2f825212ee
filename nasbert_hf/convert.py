"""`from_bert`: a `BertModel`/`BertFor*` (or `BertConfig`) as the equivalent NasBert model.

A BERT layer becomes two slots, `mha:A` then `ffn:I`, with the same weights, so the converted
model computes the same function (to float32 rounding).
"""

import re

from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

from .modeling import (
    NasBertConfig,
    NasBertForMaskedLM,
    NasBertForQuestionAnswering,
    NasBertForSequenceClassification,
    NasBertForTokenClassification,
    NasBertModel,
)

# Checked in order: subclasses before BertModel.
HEAD_CLASSES = {
    BertForMaskedLM: NasBertForMaskedLM,
    BertForSequenceClassification: NasBertForSequenceClassification,
    BertForQuestionAnswering: NasBertForQuestionAnswering,
    BertForTokenClassification: NasBertForTokenClassification,
    BertModel: NasBertModel,
}

# Shared settings that keep their meaning (and name) between the two configs.
SHARED_FIELDS = (
    "vocab_size", "hidden_size", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
    "max_position_embeddings", "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id",
    "classifier_dropout", "id2label", "label2id", "problem_type",
)

# BERT parameter name -> NasBert parameter name; `{a}`/`{f}` are the attention/FFN slot of layer i.
RENAMES = (
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", "encoder.layers.{a}.\\2."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", "encoder.layers.{a}.output."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", "encoder.layers.{a}.LayerNorm."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", "encoder.layers.{f}.intermediate."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", "encoder.layers.{f}.output."),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.", "encoder.layers.{f}.LayerNorm."),
    (r"^bert\.", "nasbert."),
    (r"^cls\.predictions\.transform\.dense\.", "cls.dense."),
    (r"^cls\.predictions\.transform\.LayerNorm\.", "cls.LayerNorm."),
    (r"^cls\.predictions\.decoder\.", "cls.decoder."),
    (r"^cls\.predictions\.bias$", "cls.bias"),
)


def config_from_bert(config):
    """The `NasBertConfig` of a `BertConfig`: slots alternate `mha:A` and `ffn:I`."""
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"Cannot convert a BERT with position_embedding_type={config.position_embedding_type!r}: "
            "NasBert uses absolute position embeddings."
        )
    if getattr(config, "is_decoder", False):
        raise ValueError("Cannot convert a BERT decoder (is_decoder=True): NasBert is an encoder.")
    layers = [f"mha:{config.num_attention_heads}", f"ffn:{config.intermediate_size}"] * config.num_hidden_layers
    fields = {name: getattr(config, name) for name in SHARED_FIELDS if hasattr(config, name)}
    return NasBertConfig(layers=layers, **fields)


def rename_bert_key(key):
    layer = re.search(r"encoder\.layer\.(\d+)\.", key)
    for pattern, replacement in RENAMES:
        if layer:
            index = int(layer.group(1))
            replacement = replacement.format(a=2 * index, f=2 * index + 1)
        key = re.sub(pattern, replacement, key)
    return key


def from_bert(model):
    """Convert a BERT model (or config) into the equivalent NasBert model (or config).

    Supports `BertModel`, `BertForMaskedLM`, `BertForSequenceClassification`,
    `BertForQuestionAnswering` and `BertForTokenClassification`.
    """
    if isinstance(model, BertConfig):
        return config_from_bert(model)
    target_class = next((nas for bert, nas in HEAD_CLASSES.items() if isinstance(model, bert)), None)
    if target_class is None:
        supported = ", ".join(cls.__name__ for cls in HEAD_CLASSES)
        raise TypeError(f"from_bert cannot convert {type(model).__name__}; supported: {supported}, BertConfig.")
    config = config_from_bert(model.config)
    converted = target_class(config)
    if isinstance(converted, NasBertModel) and model.pooler is None:
        converted.pooler = None
    wanted = converted.state_dict()
    state = {rename_bert_key(key): value for key, value in model.state_dict().items()}
    state = {key: value for key, value in state.items() if key in wanted}  # drops BERT's index buffers
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise ValueError(f"Converting {type(model).__name__}: no BERT weight for {missing[:5]}.")
    converted.load_state_dict(state)
    return converted.to(dtype=next(model.parameters()).dtype).train(model.training)
