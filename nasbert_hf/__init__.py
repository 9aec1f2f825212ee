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
from .zoo import install_name_resolution as _install_name_resolution

__version__ = "0.1.0"

_register()
_install_name_resolution()  # `from_pretrained("nasbert-5M")` also looks in the local zoo and the Hub org
