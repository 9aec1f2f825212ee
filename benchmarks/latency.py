"""Deployment latency: NasBert vs. uniform BERT of equal parameters, eager PyTorch vs. ONNX Runtime,
float32 vs. dynamic int8, at batch 1 and 32 and sequence 32 and 128, all in one interleaved run.

Every model is a sequence classifier (2 labels) with random weights: latency does not depend on
the weights. Without arguments the NasBert side is four representative architectures that mix
mha/ffn/conv/id at BERT-tiny/mini/small/medium's hidden sizes, their FFN sizes solved so that
each has the parameter count of its BERT shape; with MODEL_DIR arguments it is those saved
models, each paired with the BERT shape nearest in parameters. Each model is exported with
`nasbert_hf.export_onnx` (so every ONNX graph passed the parity check) and quantised with
`nasbert_hf.quantization`. All (model, backend) pairs of one batch/sequence setting are timed in
alternating order, one call each per repeat; the tables report medians, and NasBert/BERT ratios
from the same run.

    python benchmarks/latency.py                 # ~10 min on 2 cores; table into docs/deployment.md
    python benchmarks/latency.py --quick         # tiny and mini shapes, fewer repeats (~2 min)
    python benchmarks/latency.py out/nasbert-5M out/nasbert-10M   # saved models
"""

import argparse
import datetime
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

from nasbert_hf import Architecture, NasBertForSequenceClassification
from nasbert_hf.cost import count_params
from nasbert_hf.export_onnx import export_model, load_model, load_session, run_session
from nasbert_hf.quantization import quantize_onnx, quantize_torch
from nasbert_hf.timing import describe_machine, time_interleaved

DOCS = Path(__file__).resolve().parents[1] / "docs"
TASK = "sequence-classification"
VOCAB_SIZE = 30522
BACKENDS = ("torch", "torch-int8", "ort", "ort-int8")
SETTINGS = ((1, 32), (1, 128), (32, 32), (32, 128))  # (batch, sequence)

# Uniform BERT shapes (layers, hidden) of Turc et al.'s compact BERTs; heads = hidden / 64, FFN = 4 x hidden.
BERT_SHAPES = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512)}

# Representative searched-style stacks at the same hidden sizes: attention partly replaced by
# separable convolutions and identity slots, with the freed parameters moved into the FFNs
# ("ffn" slots get the size that equalises the parameter count).
NASBERT_TEMPLATES = {
    "tiny": ("mha:2", "ffn", "conv:5", "ffn"),
    "mini": ("mha:4", "ffn", "conv:3", "ffn", "mha:4", "id", "conv:7", "ffn"),
    "small": ("mha:8", "ffn", "conv:5", "ffn", "mha:4", "ffn", "id", "ffn"),
    "medium": (
        "mha:8", "ffn", "conv:3", "ffn", "mha:8", "ffn", "conv:7", "id",
        "mha:4", "ffn", "id", "ffn", "mha:8", "ffn", "conv:5", "ffn",
    ),
}
SIZE_MULTIPLE = 16  # FFN sizes are rounded to a multiple of this


def bert_config(layers, hidden):
    return BertConfig(
        vocab_size=VOCAB_SIZE, num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden,
    )


def equal_params_architecture(template, hidden, target):
    """The template with one common FFN size chosen so that `NasBertModel` has ~`target` parameters."""
    fixed = Architecture(hidden, tuple(code for code in template if code != "ffn"))
    base = count_params(fixed.to_config(vocab_size=VOCAB_SIZE))
    ffn_slots = template.count("ffn")
    # An ffn:D slot holds D * (2 * hidden + 1) weights plus 3 * hidden (output bias, LayerNorm).
    size = (target - base - 3 * hidden * ffn_slots) / (ffn_slots * (2 * hidden + 1))
    size = max(SIZE_MULTIPLE, SIZE_MULTIPLE * round(size / SIZE_MULTIPLE))
    return Architecture(hidden, tuple(f"ffn:{size}" if code == "ffn" else code for code in template))


def params(model):
    return sum(parameter.numel() for parameter in model.parameters())


@dataclass
class Entry:
    """One model of the benchmark and its backends' latencies (ms) per (batch, sequence)."""

    name: str
    family: str  # "nasbert" or "bert"
    description: str
    model: torch.nn.Module
    pair: str  # the BERT shape it is compared with
    latency: dict = field(default_factory=dict)  # (backend, batch, seq) -> ms

    @property
    def params(self):
        return params(self.model)


def default_entries(shapes):
    entries = []
    for shape in shapes:
        bert = BertForSequenceClassification(bert_config(*BERT_SHAPES[shape])).eval()
        target = params(bert.bert)
        arch = equal_params_architecture(NASBERT_TEMPLATES[shape], BERT_SHAPES[shape][1], target)
        nasbert = NasBertForSequenceClassification(arch.to_config(vocab_size=VOCAB_SIZE)).eval()
        layers, hidden = BERT_SHAPES[shape]
        entries.append(Entry(f"nasbert-{shape}", "nasbert", str(arch), nasbert, shape))
        entries.append(Entry(f"bert-{shape}", "bert", f"L{layers}/H{hidden}", bert, shape))
    return entries


def entries_from_dirs(model_dirs):
    entries, shapes = [], {}
    for shape, (layers, hidden) in BERT_SHAPES.items():
        shapes[shape] = params(BertForSequenceClassification(bert_config(layers, hidden)))
    for model_dir in model_dirs:
        # A saved model of another head gets a new (random) classifier: latency only.
        model, _ = load_model(model_dir, TASK)
        nearest = min(shapes, key=lambda shape: abs(shapes[shape] - params(model)))
        description = str(Architecture.from_config(model.config))
        entries.append(Entry(Path(model_dir).name, "nasbert", description, model, nearest))
    for shape in dict.fromkeys(entry.pair for entry in entries):
        layers, hidden = BERT_SHAPES[shape]
        bert = BertForSequenceClassification(bert_config(layers, hidden)).eval()
        entries.append(Entry(f"bert-{shape}", "bert", f"L{layers}/H{hidden}", bert, shape))
    return entries


def backends(entry, workdir, threads):
    """`{backend: run(input_ids, attention_mask)}` for one model: export, quantise, open sessions."""
    fp32_path, int8_path = workdir / f"{entry.name}.onnx", workdir / f"{entry.name}-int8.onnx"
    diff = export_model(entry.model, fp32_path, TASK)
    quantize_onnx(fp32_path, int8_path)
    print(f"  {entry.name}: {entry.params / 1e6:.1f}M params, exported (max diff {diff:.1e}) and quantised", flush=True)
    torch_int8 = quantize_torch(entry.model)

    def eager(model):
        def run(input_ids, attention_mask):
            with torch.inference_mode():
                model(input_ids=input_ids, attention_mask=attention_mask)
        return run

    def onnx(session):
        return lambda input_ids, attention_mask: run_session(session, input_ids.numpy(), attention_mask.numpy())

    return {
        "torch": eager(entry.model),
        "torch-int8": eager(torch_int8),
        "ort": onnx(ort_session(fp32_path, threads)),
        "ort-int8": onnx(ort_session(int8_path, threads)),
    }


def ort_session(path, threads):
    """A CPU session whose worker threads sleep between runs instead of spinning: in an interleaved
    run, spinning ORT threads would steal the cores of the PyTorch call that follows."""
    import onnxruntime

    load_session(path)  # a clear error for a missing or corrupted file
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(entries, runners, settings, repeats):
    for batch, seq in settings:
        input_ids = torch.randint(1000, VOCAB_SIZE, (batch, seq), generator=torch.Generator().manual_seed(seq))
        attention_mask = torch.ones_like(input_ids)
        functions = {
            (entry.name, backend): (lambda run=run: run(input_ids, attention_mask))
            for entry in entries
            for backend, run in runners[entry.name].items()
        }
        # Batch-1 calls are cheap and noisier: five times the repeats. Large batches settle after
        # one or two warm-up calls.
        small = batch == 1
        medians = time_interleaved(functions, repeats * (5 if small else 1), warmup=5 if small else 2)
        for entry in entries:
            for backend in BACKENDS:
                entry.latency[backend, batch, seq] = 1e3 * medians[entry.name, backend]
        print(f"  batch {batch}, sequence {seq}: done", flush=True)


def setting_label(batch, seq):
    return f"b{batch}/s{seq}"


def latency_table(entries, settings):
    header = "| model | architecture | params | backend | " + " | ".join(setting_label(*s) for s in settings) + " |"
    lines = [header, "|---|---|---:|---|" + "---:|" * len(settings)]
    for entry in entries:
        for backend in BACKENDS:
            cells = " | ".join(f"{entry.latency[backend, batch, seq]:.2f}" for batch, seq in settings)
            lines.append(f"| {entry.name} | `{entry.description}` | {entry.params / 1e6:.1f}M | {backend} | {cells} |")
    return "\n".join(lines)


def ratio_table(entries, settings):
    """NasBert latency / equal-params BERT latency, per backend and setting (< 1: NasBert is faster)."""
    berts = {entry.pair: entry for entry in entries if entry.family == "bert"}
    lines = [
        "| NasBert model | vs. | params ratio | backend | " + " | ".join(setting_label(*s) for s in settings) + " |",
        "|---|---|---:|---|" + "---:|" * len(settings),
    ]
    for entry in (entry for entry in entries if entry.family == "nasbert"):
        bert = berts[entry.pair]
        for backend in BACKENDS:
            cells = " | ".join(
                f"{entry.latency[backend, b, s] / bert.latency[backend, b, s]:.2f}" for b, s in settings
            )
            lines.append(f"| {entry.name} | {bert.name} | {entry.params / bert.params:.3f} | {backend} | {cells} |")
    return "\n".join(lines)


def speedup_table(entries, settings):
    """How much faster each model runs in ONNX Runtime and in int8 than in eager fp32 PyTorch."""
    lines = [
        "| model | backend | " + " | ".join(setting_label(*s) for s in settings) + " |",
        "|---|---|" + "---:|" * len(settings),
    ]
    for entry in entries:
        for backend in BACKENDS[1:]:
            cells = " | ".join(
                f"{entry.latency['torch', b, s] / entry.latency[backend, b, s]:.2f}x" for b, s in settings
            )
            lines.append(f"| {entry.name} | {backend} | {cells} |")
    return "\n".join(lines)


def plot(entries, settings, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    columns = 2
    rows = -(-len(settings) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 4 * rows), squeeze=False)
    colours = dict(zip(BACKENDS, ("tab:blue", "tab:cyan", "tab:red", "tab:orange")))
    for axis, (batch, seq) in zip(axes.flat, settings):
        for backend in BACKENDS:
            for family, marker, style in (("nasbert", "o", "-"), ("bert", "s", "--")):
                members = sorted((e for e in entries if e.family == family), key=lambda e: e.params)
                axis.plot(
                    [e.params / 1e6 for e in members], [e.latency[backend, batch, seq] for e in members],
                    marker=marker, linestyle=style, color=colours[backend], label=f"{family} {backend}",
                )
        axis.set(title=f"batch {batch}, sequence {seq}", xlabel="parameters (M)", ylabel="latency (ms)",
                 xscale="log", yscale="log")
        sizes = sorted({round(e.params / 1e6, 1) for e in entries})
        axis.set_xticks(sizes, [f"{size:g}" for size in sizes])
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.grid(alpha=0.3, which="both")
    for axis in list(axes.flat)[len(settings):]:
        axis.set_visible(False)
    axes[0][0].legend(fontsize=7, ncol=2)
    figure.suptitle("NasBert (circles) vs. equal-params BERT (squares), random weights, sequence classification")
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    figure.savefig(temporary, dpi=110)
    os.replace(temporary, path)


MARKERS = ("<!-- latency-benchmark:start -->", "<!-- latency-benchmark:end -->")


def write_into_doc(doc, section):
    """Replace the text between the markers in `doc` (appending them if absent), atomically."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    block = f"{MARKERS[0]}\n{section}\n{MARKERS[1]}"
    pattern = re.compile(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text.rstrip()}\n\n{block}\n"
    temporary = doc.with_name(f".{doc.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, doc)


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def report(entries, settings, args, load_before, load_after):
    import onnxruntime

    command = "python benchmarks/latency.py " + " ".join(sys.argv[1:])
    return "\n\n".join([
        f"Command: `{command.strip()}`  \n"
        f"Machine: {cpu_name()}; {describe_machine()}; ONNX Runtime {onnxruntime.__version__}, "
        f"{args.threads} intra-op threads; {datetime.date.today().isoformat()}; {args.repeats} interleaved "
        f"repeats (batch 1: {5 * args.repeats}), medians.  \n"
        f"Load average before/after (1 min): {load_before:.1f} / {load_after:.1f}"
        + (" (other jobs were running: absolute numbers are noisy; the same-run ratios less so)."
           if max(load_before, load_after - args.threads) > 1.0 else "; no other jobs were running."),
        "Latency (ms per batch):",
        latency_table(entries, settings),
        "NasBert / equal-params BERT (same run; below 1 means NasBert is faster):",
        ratio_table(entries, settings),
        "Speed-up over eager fp32 PyTorch:",
        speedup_table(entries, settings),
    ])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", nargs="*", help="Saved NasBert models (default: built-in architectures).")
    parser.add_argument("--quick", action="store_true", help="tiny and mini shapes only, 3 repeats.")
    parser.add_argument("--repeats", type=int, default=None, help="Interleaved repeats per setting (default 5; quick 3).")
    parser.add_argument("--threads", type=int, default=2, help="Threads for PyTorch and ONNX Runtime (default 2).")
    parser.add_argument("--doc", type=Path, default=DOCS / "deployment.md", help="Markdown file to write the tables into.")
    parser.add_argument("--plot", type=Path, default=DOCS / "latency.png", help="PNG of latency vs. parameters.")
    parser.add_argument("--no-write", action="store_true", help="Print the tables only.")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 5)
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    shapes = ("tiny", "mini") if args.quick else tuple(BERT_SHAPES)
    entries = entries_from_dirs(args.model_dirs) if args.model_dirs else default_entries(shapes)
    print(f"Exporting {len(entries)} models...", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        runners = {entry.name: backends(entry, Path(workdir), args.threads) for entry in entries}
        print("Timing...", flush=True)
        measure(entries, runners, SETTINGS, args.repeats)
    section = report(entries, SETTINGS, args, load_before, os.getloadavg()[0])
    print(section)
    if not args.no_write:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        write_into_doc(args.doc, section + f"\n\n![latency vs. parameters]({os.path.relpath(args.plot, args.doc.parent)})")
        plot(entries, SETTINGS, args.plot)
        print(f"Wrote {args.doc} and {args.plot}")


if __name__ == "__main__":
    main()
