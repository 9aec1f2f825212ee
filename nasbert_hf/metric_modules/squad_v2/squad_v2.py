"""SQuAD v2.0's official exact match and F1, unanswerable questions included, as an `evaluate` module.

Load it with `nasbert_hf.metrics.load_metric("squad_v2")`. A question with no gold answer is answered
correctly by the empty string only. The numbers come from `nasbert_hf.metrics.squad_metrics`; unlike
the Hub's `squad_v2` module it takes no `no_answer_probability` (predictions here are already "" or
not, decided by the null-score threshold) and so reports no best-threshold scores.
"""

import evaluate

from nasbert_hf.metrics import squad_metric_info, squad_metrics, squad_records

_DESCRIPTION = """\
SQuAD v2.0 exact match and token F1 (percent) over all questions, plus the HasAns_* / NoAns_* splits
(exact, f1, total) over the answerable and the unanswerable questions when both kinds are present.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": question id, "prediction_text": answer text, "" for no answer}.
    references: list of {"id": question id, "answers": {"text": [...], "answer_start": [...]}};
        empty lists for an unanswerable question.
Returns: {"exact_match": ..., "f1": ...}, with HasAns_*/NoAns_* when some questions are unanswerable.
"""

_CITATION = """\
@inproceedings{rajpurkar-etal-2018-know,
  title={Know What You Don't Know: Unanswerable Questions for {SQ}u{AD}},
  author={Rajpurkar, Pranav and Jia, Robin and Liang, Percy},
  booktitle={Proceedings of ACL},
  year={2018}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SquadV2(evaluate.Metric):
    def _info(self):
        return squad_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION)

    def _compute(self, predictions, references):
        return squad_metrics(*squad_records(predictions, references))
