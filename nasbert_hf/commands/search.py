"""`nasbert search`: re-run only the search and export on a trained supernet."""

HELP = "Search a trained supernet for the best model of each budget and export them (seconds)."


def add_arguments(parser):
    parser.add_argument("run_dir", help="A finished supernet run folder (e.g. nasbert-out/supernet-run).")
    parser.add_argument("--budgets", "--budget", dest="budgets", nargs="+", default=[], metavar="BUDGET",
                        help="params=5M, flops=2G or latency=8ms@cpu (several allowed); default: three "
                             "parameter budgets spread over the feasible range.")
    parser.add_argument("--out", default="nasbert-out", help="Output folder (default: ./nasbert-out).")
    parser.add_argument("--top-k", type=int, default=5, help="Candidates re-scored per hidden size and budget (default: 5).")
    parser.add_argument("--rescore-batches", type=int, default=4, help="Validation batches per re-scoring.")


def run(args):
    from ..pipeline import SearchArguments, format_summary, search_and_export

    summary = search_and_export(SearchArguments(
        run_dir=args.run_dir, budgets=args.budgets, out=args.out, top_k=args.top_k,
        rescore_batches=args.rescore_batches,
    ))
    print(format_summary(summary))
