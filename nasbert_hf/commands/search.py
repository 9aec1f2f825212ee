"""`nasbert search`: re-run only the search and export on a trained supernet."""

HELP = "Search a trained supernet for the best model of each budget and export them (seconds)."

# The SearchArguments that choose the family, and --force, shared with `nasbert compress`.
SELECTION = ("budgets", "top_k", "min_budget_use", "exclude_ops", "force")
ALIASES = {"budgets": ["--budget"], "exclude_ops": ["--exclude-op"]}


def add_arguments(parser):
    from ..arguments import add_dataclass_arguments
    from ..pipeline import SearchArguments

    parser.add_argument("run_dir", help="A finished supernet run folder (e.g. nasbert-out/supernet-run).")
    add_dataclass_arguments(parser, SearchArguments, aliases=ALIASES, skip=("run_dir",))


def add_selection_arguments(parser):
    """The flags that choose the family, and --force (shared with `nasbert compress`)."""
    from ..arguments import add_dataclass_arguments
    from ..pipeline import SearchArguments

    add_dataclass_arguments(parser, SearchArguments, aliases=ALIASES, only=SELECTION)


def selection_values(args):
    """The family-choosing `SearchArguments` given on the command line."""
    from ..arguments import given_values
    from ..pipeline import SearchArguments

    return {name: value for name, value in given_values(args, SearchArguments).items() if name in SELECTION}


def run(args):
    from ..arguments import given_values
    from ..pipeline import SearchArguments, format_summary, search_and_export

    summary = search_and_export(SearchArguments(**given_values(args, SearchArguments)))
    print(format_summary(summary))
