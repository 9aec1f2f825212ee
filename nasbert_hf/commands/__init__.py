"""Sub-commands of `nasbert`, in the order `nasbert --help` lists them.

Each name maps to `nasbert_hf/commands/<name with - as _>.py`, which defines
`HELP`, `add_arguments(parser)` and `run(args)`.
"""

COMMANDS = [
    "compress",
    "supernet",
    "search",
    "latency-table",
    "distill",
    "convert",
    "glue",
    "squad",
    "report",
    "export-onnx",
    "install",
    "list",
    "push",
]
