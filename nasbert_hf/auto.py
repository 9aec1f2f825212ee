"""Register `nasbert` with the transformers Auto classes.

After `import nasbert_hf`, `AutoConfig`/`AutoModel`/`AutoModelFor*` resolve `model_type: nasbert`
with this package's code, and `save_pretrained` copies the two modeling files beside the
weights (the config's `auto_map` names every Auto class), so that
`AutoModel.from_pretrained(dir, trust_remote_code=True)` works where this package is absent.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .modeling import (
    NasBertConfig,
    NasBertForMaskedLM,
    NasBertForQuestionAnswering,
    NasBertForSequenceClassification,
    NasBertForTokenClassification,
    NasBertModel,
)

AUTO_CLASSES = {
    AutoModel: NasBertModel,
    AutoModelForMaskedLM: NasBertForMaskedLM,
    AutoModelForSequenceClassification: NasBertForSequenceClassification,
    AutoModelForTokenClassification: NasBertForTokenClassification,
    AutoModelForQuestionAnswering: NasBertForQuestionAnswering,
}


def register():
    AutoConfig.register(NasBertConfig.model_type, NasBertConfig, exist_ok=True)
    NasBertConfig.register_for_auto_class()
    for auto_class, model_class in AUTO_CLASSES.items():
        auto_class.register(NasBertConfig, model_class, exist_ok=True)
        # Makes `save_pretrained` copy the modeling files next to the weights.
        model_class.register_for_auto_class(auto_class.__name__)
