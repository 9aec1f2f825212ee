"""`nasbert push MODEL_DIR --repo ORG/NAME`: upload a model to the Hugging Face Hub in one commit."""

HELP = "Push a model folder (or a zoo model) to the Hugging Face Hub: weights, tokenizer, code, model card."


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL_DIR", help="Folder written by `save_pretrained`, or a zoo model name.")
    parser.add_argument("--repo", help="Hub repository 'org/name' (default: $NASBERT_HUB_ORG/<model name>).")
    parser.add_argument("--private", action="store_true", help="Create the repository private.")
    parser.add_argument("--revision", help="Branch to commit to (default: main).")
    parser.add_argument("--message", help="Commit message.")
    parser.add_argument(
        "--license", default="apache-2.0", help="License of a generated model card (default: apache-2.0)."
    )
    parser.add_argument(
        "--timeout", type=float,
        help="Most seconds any Hub call may wait for an answer (default: $NASBERT_HUB_TIMEOUT, else 60).",
    )
    parser.add_argument(
        "--token",
        help="Hub token with write access (default: $HF_TOKEN, else the `hf auth login` token). "
        "Prefer the environment: command lines are visible to other users.",
    )


def run(args):
    from ..hub import push

    info = push(
        args.model,
        args.repo,
        private=args.private or None,
        token=args.token,
        revision=args.revision,
        commit_message=args.message,
        license=args.license,
        timeout=args.timeout,
    )
    print(f"Pushed {args.model} to {info.repo_url.repo_id}: {info.commit_url}")
