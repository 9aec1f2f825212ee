"""SQuAD v1.1's official exact match and F1, as an `evaluate` module that loads offline by path.

Load it with `nasbert_hf.metrics.load_metric("squad")`. Inputs are those of the Hub's `squad`
module; the numbers come from `nasbert_hf.metrics.squad_metrics`.
"""

import evaluate

from nasbert_hf.metrics import squad_metric_info, squad_metrics, squad_records

_DESCRIPTION = """\
SQuAD v1.1 exact match and token F1 of normalised answers (lower case, no punctuation, no a/an/the),
each question scored against its best-matching gold answer; percentages, as the official script prints.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": question id, "prediction_text": answer text}.
    references: list of {"id": question id, "answers": {"text": [...], "answer_start": [...]}}.
Returns: {"exact_match": ..., "f1": ...} in percent.
"""

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
  title={{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={Proceedings of EMNLP},
  year={2016}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self):
        return squad_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION)

    def _compute(self, predictions, references):
        predictions, references = squad_records(predictions, references)
        unanswerable = [question_id for question_id, answers in references.items() if not answers]
        if unanswerable:
            # v1.1 has no unanswerable questions: data like this is v2.0 and needs its metric.
            raise ValueError(
                f"{len(unanswerable)} reference(s) have no gold answer, e.g. {unanswerable[:3]}; "
                'SQuAD v1.1 has none: score v2.0 data with load_metric("squad_v2").'
            )
        return squad_metrics(predictions, references)
