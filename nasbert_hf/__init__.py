"""nasbert-hf: task-agnostic BERT compression by neural architecture search (NAS-BERT).

`import nasbert_hf` registers the `nasbert` model type with the transformers Auto classes.
"""

from .modeling import (
    NasBertConfig,
    NasBertForMaskedLM,
    NasBertForQuestionAnswering,
    NasBertForSequenceClassification,
    NasBertForTokenClassification,
    NasBertModel,
    NasBertPreTrainedModel,
    parse_op,
)
from .auto import register as _register
from .architecture import Architecture
from .convert import from_bert
from .cost import count_flops, count_params

__version__ = "0.1.0"

_register()
