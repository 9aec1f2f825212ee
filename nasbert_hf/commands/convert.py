"""`nasbert convert`: save a BERT checkpoint as the equivalent NasBert model."""

HELP = "Convert a BERT checkpoint (BertModel or BertFor*) into the equivalent NasBert model."


def add_arguments(parser):
    parser.add_argument("bert", help="Local folder or Hub name of a BERT checkpoint.")
    parser.add_argument("--out", required=True, help="Folder to write the NasBert model (and tokenizer) to.")


def run(args):
    from transformers import AutoModel, AutoTokenizer

    from ..convert import from_bert

    model = from_bert(AutoModel.from_pretrained(args.bert))
    model.save_pretrained(args.out)
    try:
        AutoTokenizer.from_pretrained(args.bert).save_pretrained(args.out)
    except (OSError, ValueError):
        print(f"note: no tokenizer found beside {args.bert}; saved the model only.")
    print(f"Saved {type(model).__name__} ({len(model.config.layers)} slots) to {args.out}")
