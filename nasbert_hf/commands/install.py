"""`nasbert install DIR`: copy an exported model into the local model zoo ($NASBERT_HOME)."""

HELP = "Install an exported model folder into the local model zoo, loadable by name with from_pretrained."


def add_arguments(parser):
    parser.add_argument("model_dir", help="Folder written by `save_pretrained` (e.g. one model of `nasbert compress`).")
    parser.add_argument("--name", help="Name in the zoo (default: `name` in nasbert.json, else the folder name).")
    parser.add_argument(
        "--force", action="store_true",
        help="Replace a model of the same name (in one step: the name never points to a partial model).",
    )
    parser.add_argument("--home", help="Zoo folder (default: $NASBERT_HOME, else ~/.cache/nasbert).")


def run(args):
    from ..zoo import install

    path = install(args.model_dir, args.name, home=args.home, overwrite=args.force)
    print(f"Installed {path.name} at {path}")
    print(f"After `import nasbert_hf`, AutoModel.from_pretrained({path.name!r}) loads it.")
