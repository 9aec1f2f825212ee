"""GLUE's official metric set per task, as an `evaluate` module that loads offline by path.

Load it with `nasbert_hf.metrics.load_metric("glue", config_name=TASK)`; the numbers come from
`nasbert_hf.metrics.glue_metrics`, so they equal what the library computes everywhere else.
"""

import datasets
import evaluate

from nasbert_hf.metrics import GLUE_METRICS, glue_metrics

_DESCRIPTION = """\
The official metrics of a GLUE task (config name = task): Matthews correlation (cola, ax), accuracy
(sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli), accuracy and F1 of class 1 (mrpc, qqp),
Pearson and Spearman correlation (stsb). Fractions, as the Hub's `glue` module returns them.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids (the regression score for stsb).
    references: gold class ids (the gold score for stsb).
Returns: a dict of the task's metrics, e.g. {"accuracy": 0.9, "f1": 0.93} for mrpc.
Examples:
    >>> from nasbert_hf.metrics import load_metric
    >>> load_metric("glue", config_name="mrpc").compute(predictions=[1, 0, 1], references=[1, 1, 1])
    {'accuracy': 0.6666666666666666, 'f1': 0.8}
"""

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations},
  year={2019}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in GLUE_METRICS:
            raise ValueError(
                f"Unknown GLUE metric config {self.config_name!r}; pass config_name= one of {', '.join(GLUE_METRICS)}."
            )
        # float64, not the Hub module's float32: STS-B scores keep every bit on their way through Arrow.
        dtype = "float64" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            reference_urls=["https://gluebenchmark.com/"],
        )

    def _compute(self, predictions, references):
        return glue_metrics(self.config_name, predictions, references)
