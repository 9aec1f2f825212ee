"""NasBert configuration and models (installed as `nasbert_hf.modeling`)."""

from .configuration_nasbert import NasBertConfig, parse_attention, parse_op, slot_widths, validate_layers
from .modeling_nasbert import (
    NasBertForMaskedLM,
    NasBertForQuestionAnswering,
    NasBertForSequenceClassification,
    NasBertForTokenClassification,
    NasBertModel,
    NasBertPreTrainedModel,
    build_op,
    resize_hidden,
)
