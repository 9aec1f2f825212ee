"""`nasbert convert`: save a BERT checkpoint as the equivalent NasBert model."""

HELP = (
    "Convert a BERT checkpoint (BertModel or BertFor*) into the equivalent NasBert model (a bare encoder gets "
    "an MLM head, so that it can be distilled); --out is written fresh."
)


def add_arguments(parser):
    parser.add_argument("bert", help="Local folder or Hub name of a BERT checkpoint.")
    parser.add_argument("--out", required=True, help="Folder to write the NasBert model (and tokenizer) to; "
                                                     "an existing folder is replaced, unless it holds a model.")


def run(args):
    from ..convert import convert_folder

    model = convert_folder(args.bert, args.out)
    print(f"Saved {type(model).__name__} ({len(model.config.layers)} slots) to {args.out}")
