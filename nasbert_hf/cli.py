"""The `nasbert` command line: one sub-command per stage (`nasbert --help` lists them).

Each sub-command lives in `nasbert_hf/commands/<name>.py` and defines `HELP`,
`add_arguments(parser)` and `run(args)`; `nasbert_hf/commands/__init__.py` lists them. The flags
of an argument dataclass come from `nasbert_hf.arguments.add_dataclass_arguments`, so that a
command takes the flags its recipe takes (`HfArgumentParser`'s), plus short aliases.
"""

import argparse
import importlib
import sys

from .commands import COMMANDS


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nasbert", description="NAS-BERT: compress a BERT into a family of small models, one per budget."
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"nasbert-hf {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name.replace('-', '_')}", __package__)
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args) or 0
    except (ValueError, FileNotFoundError, OSError) as error:
        # Bad input gets one clear line, not a traceback; `NASBERT_DEBUG=1` shows the traceback.
        import os

        if os.environ.get("NASBERT_DEBUG"):
            raise
        print(f"nasbert {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
