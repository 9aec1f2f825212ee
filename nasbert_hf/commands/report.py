"""`nasbert report`: fine-tune a run's models and baselines on GLUE tasks; write a markdown table."""

HELP = "Fine-tune the exported models (and baselines) on GLUE tasks and write OUT/report.md."


def add_arguments(parser):
    from ..arguments import add_dataclass_arguments
    from ..report import ReportArguments

    parser.add_argument("out_dir", help="The folder `nasbert compress` wrote (e.g. nasbert-out).")
    add_dataclass_arguments(parser, ReportArguments, aliases={"baselines": ["--baseline"]}, skip=("out_dir",))


def run(args):
    from ..arguments import given_values
    from ..report import ReportArguments, report

    print(report(ReportArguments(**given_values(args, ReportArguments))))
