"""`from_bert`: a `BertModel`/`BertFor*` (or `BertConfig`) as the equivalent NasBert model.

A BERT layer becomes two slots, `mha:A` then `ffn:I`, with the same weights, so the converted
model computes the same function (to float32 rounding).

`convert_folder` is `nasbert convert`: a saved BERT (its head taken from `config.architectures`)
into a fresh NasBert folder, written atomically. A bare encoder gets an MLM head (the BERT's
pooler kept): distillation needs one, and so does `AutoModelForMaskedLM`.
"""

import re
from pathlib import Path

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


# `config.architectures` names that `convert_folder` loads with a head; BertForPreTraining's MLM
# head is BertForMaskedLM's (its next-sentence head has no NasBert counterpart).
LOADABLE_HEADS = {cls.__name__: cls for cls in HEAD_CLASSES}
LOADABLE_HEADS["BertForPreTraining"] = BertForMaskedLM


def load_bert(name_or_path):
    """The BERT of a saved folder (or Hub name) with the head its config names, else `BertModel`.

    Anything but a BERT is a `ValueError` naming its model type and what is supported, before the
    weights are read; corrupt safetensors weights are a `ValueError` naming the file.
    """
    from transformers import AutoConfig

    from .folders import check_model_weights

    config = AutoConfig.from_pretrained(name_or_path)
    if config.model_type != "bert":
        architectures = ", ".join(config.architectures or []) or "no architectures"
        raise ValueError(
            f"{name_or_path} holds a {config.model_type!r} model ({architectures}); nasbert convert takes BERT "
            f"checkpoints (model_type 'bert'): {', '.join(sorted(LOADABLE_HEADS))}."
        )
    if Path(name_or_path).is_dir():
        check_model_weights(name_or_path)
    bert_class = next((LOADABLE_HEADS[name] for name in config.architectures or [] if name in LOADABLE_HEADS), BertModel)
    return bert_class.from_pretrained(name_or_path)


def with_mlm_head(model):
    """A `NasBertForMaskedLM` around a converted bare encoder, with a freshly initialised MLM head
    (decoder tied to the word embeddings) and the encoder's pooler kept, so that the folder also
    loads as `AutoModel`/`AutoModelForSequenceClassification` with the BERT's pooler."""
    masked_lm = NasBertForMaskedLM(model.config)
    masked_lm.nasbert = model
    masked_lm.cls.decoder.weight = model.embeddings.word_embeddings.weight
    return masked_lm.to(dtype=next(model.parameters()).dtype).train(model.training)


def convert_folder(bert, out_dir):
    """`nasbert convert`: the NasBert model of BERT `bert` (folder or Hub name), with its tokenizer,
    into `out_dir`; returns the saved model. The folder is written fresh in a staging folder that
    then replaces `out_dir`, so nothing of a previous folder there survives, and a failure leaves it
    intact. An `out_dir` that holds a model, or lies in the zoo, is refused (`check_output_folder`)."""
    from transformers import AutoTokenizer

    from .folders import atomic_folder
    from .paths import check_model_path, check_output_folder

    check_output_folder(out_dir, "convert")
    converted = from_bert(load_bert(check_model_path(bert, "BERT")))
    if isinstance(converted, NasBertModel):
        converted = with_mlm_head(converted)
    with atomic_folder(out_dir) as staging:
        converted.save_pretrained(staging)
        try:
            AutoTokenizer.from_pretrained(bert).save_pretrained(staging)
        except (OSError, ValueError):
            print(f"note: no tokenizer found beside {bert}; saved the model only.")
    return converted
