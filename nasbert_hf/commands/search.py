"""`nasbert search`: re-run only the search and export on a trained supernet."""

from ..search import MIN_BUDGET_USE

HELP = "Search a trained supernet for the best model of each budget and export them (seconds)."


def add_arguments(parser):
    parser.add_argument("run_dir", help="A finished supernet run folder (e.g. nasbert-out/supernet-run).")
    add_selection_arguments(parser)
    parser.add_argument("--out", default="nasbert-out", help="Output folder (default: ./nasbert-out).")
    parser.add_argument("--rescore-batches", type=int, default=4, help="Validation batches per re-scoring.")


def add_selection_arguments(parser):
    """The flags that choose the family (shared with `nasbert compress`)."""
    parser.add_argument("--budgets", "--budget", dest="budgets", nargs="+", default=[], metavar="BUDGET",
                        help="params=5M (all parameters, embeddings included, as the paper counts), "
                             "body_params=3M (op slots only), flops=2G or latency=8ms@cpu (several allowed); "
                             "default: the paper's sizes 5M, 10M, 15M, 30M, 60M up to 70%% of the teacher.")
    parser.add_argument("--top-k", type=int, default=5,
                        help="Candidates re-scored per embedding size and budget (default: 5).")
    parser.add_argument("--min-budget-use", type=float, default=MIN_BUDGET_USE,
                        help="Consider only models using at least this fraction of their budget, when the candidates "
                             f"can (default: {MIN_BUDGET_USE}; 0 lets the block losses alone decide).")


def run(args):
    from ..pipeline import SearchArguments, format_summary, search_and_export

    summary = search_and_export(SearchArguments(
        run_dir=args.run_dir, budgets=args.budgets, out=args.out, top_k=args.top_k,
        min_budget_use=args.min_budget_use, rescore_batches=args.rescore_batches,
    ))
    print(format_summary(summary))
