"""`nasbert list`: the models of the local zoo with their size, latency and scores."""

import json
import sys

from ..model_card import latency_text

HELP = "List the models installed in the local model zoo ($NASBERT_HOME) with params, latency and scores."


def add_arguments(parser):
    parser.add_argument("--home", help="Zoo folder (default: $NASBERT_HOME, else ~/.cache/nasbert).")
    parser.add_argument("--json", action="store_true", help="Print the metadata of every model as JSON.")


def _pairs(values):
    """`{"SST-2": 0.912, "SQuAD": {"f1": 80.1}}` -> `SST-2=0.912 SQuAD.f1=80.1`."""
    if not isinstance(values, dict) or not values:
        return "-"
    items = []
    for key, value in values.items():
        if isinstance(value, dict):
            items += [(f"{key}.{inner}", number) for inner, number in value.items()]
        else:
            items.append((key, value))
    text = [f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in items]
    return " ".join(text)


def _millions(value):
    return f"{value / 1e6:.2f}M" if isinstance(value, (int, float)) else "-"


def table(models):
    """A markdown table: name, parameters (with / without embeddings), latency, scores, path."""
    rows = ["| name | params | params w/o emb. | latency | scores | path |", "|---|---|---|---|---|---|"]
    for model in models:
        meta = model.metadata
        rows.append(
            f"| {model.name} | {_millions(meta.get('params'))} | {_millions(meta.get('params_no_embeddings'))} "
            f"| {latency_text(meta.get('latency_ms'), context=('batch_size', 'seq_len')) or '-'} "
            f"| {_pairs(meta.get('scores'))} | {model.path} |"
        )
    return "\n".join(rows)


def run(args):
    from ..zoo import discard_retired, list_models, zoo_home

    models = list_models(args.home)
    discard_retired(args.home)  # versions replaced by `install --force` over an hour ago
    readable = [model for model in models if model.problem is None]
    if args.json:
        print(json.dumps([_record(model) for model in models], indent=2))
        return
    if not models:
        print(f"No models in the zoo at {zoo_home(args.home)}; add one with `nasbert install DIR`.")
    elif readable:
        print(table(readable))
    # Broken entries are named, with what is wrong, without hiding the others.
    for model in models:
        if model.problem is not None:
            print(f"Broken zoo entry {model.name!r}: {model.problem}", file=sys.stderr)


def _record(model):
    """The `--json` record of an entry: its path and metadata, or its name, path and problem."""
    if model.problem is not None:
        return {"name": model.name, "path": str(model.path), "problem": model.problem}
    return {"path": str(model.path), **model.metadata}
