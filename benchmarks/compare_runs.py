"""Compare the families of two or more `nasbert compress` runs that differ in one training setting.

For each budget's model: the architecture, parameters, the assembled validation MSE the search
chose it by (each run's own supernet), and the validation after distillation (hidden-state MSE and
masked-LM loss, on the same teacher and corpus for every run, so comparable across runs). Then,
per block and hidden size, the best and the mean block loss of the candidates that survived to the
end of supernet training (`candidates.json`), i.e. how well each supernet trained what the search
can pick. Prints a Markdown table; nothing is trained.

    sed 's/shrink_every: 50/shrink_every: 100000/' nasbert_hf/presets/tiny.yaml > /tmp/noshrink.yaml
    nasbert compress --config /tmp/noshrink.yaml --out OUT_NOSHRINK --no-install
    python benchmarks/compare_runs.py OUT OUT_NOSHRINK
"""

import argparse
import statistics
from pathlib import Path

from nasbert_hf.folders import CANDIDATES_FILE, read_json
from nasbert_hf.pipeline import supernet_run_of


def model_rows(runs):
    lines = ["| model | run | params | assembled MSE (search) | distilled hidden MSE | distilled MLM | architecture |",
             "|---|---|---|---|---|---|---|"]
    names = [m["name"] for m in read_json(Path(runs[0]) / "summary.json")["models"]]
    for name in names:
        for run in runs:
            folder = Path(run) / name
            if not (folder / "nasbert.json").is_file():
                lines.append(f"| {name} | {run} | - | - | - | - | (not exported) |")
                continue
            meta = read_json(folder / "nasbert.json")
            after = meta.get("distillation", {}).get("validation_after", {})
            lines.append(f"| {name} | {run} | {meta['params'] / 1e6:.2f}M | "
                         f"{meta['losses']['assembled_validation_mse']:.4f} | "
                         f"{after.get('hidden', float('nan')):.4f} | {after.get('mlm', float('nan')):.3f} | "
                         f"`{meta['architecture']}` |")
    return lines


def block_rows(runs):
    tables = {run: read_json(supernet_run_of(run) / CANDIDATES_FILE)["blocks"] for run in runs}
    hidden_sizes = sorted({c["hidden_size"] for blocks in tables.values() for block in blocks for c in block})
    lines = ["| block | run | survivors | " + " | ".join(f"H{h} best / mean" for h in hidden_sizes) + " |",
             "|---|---|---|" + "---|" * len(hidden_sizes)]
    for index in range(len(next(iter(tables.values())))):
        for run, blocks in tables.items():
            losses = {h: [c["loss"] for c in blocks[index] if c["hidden_size"] == h] for h in hidden_sizes}
            cells = [f"{min(v):.4f} / {statistics.mean(v):.4f}" if v else "-" for v in losses.values()]
            lines.append(f"| {index} | {run} | {len(blocks[index])} | " + " | ".join(cells) + " |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="Finished `nasbert compress` (or `nasbert search --out`) folders; "
                                                "the first names the models.")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("give at least two run folders to compare")
    print("\n".join(model_rows(args.runs) + [""] + block_rows(args.runs)))


if __name__ == "__main__":
    main()
