"""Can a wider word table, paid for with the teacher's least important neurons or heads, beat the
teacher's whole layers? A design study for the largest budget of the default run.

At 15M the search returns the slice: the teacher's six layers whole with an E = 128 word table.
The tiny space can only pay for a wider table with half or a quarter of a layer's heads or neurons.
This study tries finer trades the space does not offer. Every model here is the teacher's own
layers (heads and neurons ranked by `teacher_init.teacher_importance` on corpus text, the least
important dropped) on the run's factorised embedding, untrained, in the six-layer shape
`E<E>:H<H>[mha:<heads>x<head size>, ffn:<neurons>] x layers`. Each is scored with the retention
probe (`nasbert_hf/retention.py`) against the first shape (the whole layers at the run's E), with
the 95% paired-bootstrap interval over the corpus pairs.

    python benchmarks/word_table_trade.py nasbert-out --shapes 128:1536:12 160:1280:12 192:1104:12 160:1536:8
"""

import argparse
import dataclasses
from pathlib import Path

import torch

from nasbert_hf.architecture import Architecture
from nasbert_hf.data import DEFAULT_CORPUS, open_corpus_file
from nasbert_hf.export import from_supernet
from nasbert_hf.pipeline import supernet_run_of, teacher_dimensions
from nasbert_hf.retention import corpus_sentence_pairs, pair_cosines, retention_difference, retention_of
from nasbert_hf.search import Budget, cost_model_for
from nasbert_hf.supernet import Supernet
from nasbert_hf.teacher import load_teacher
from nasbert_hf.teacher_init import start_from_teacher, teacher_importance


def importance_batches(tokenizer, lines=256, batch_size=16, max_length=128):
    """Batches of the corpus's longer lines (more than 20 words), to rank heads and neurons on."""
    with open_corpus_file(DEFAULT_CORPUS) as handle:
        text = [line.strip() for line in handle if len(line.split()) > 20][:lines]
    return [dict(tokenizer(text[i:i + batch_size], truncation=True, max_length=max_length, padding=True,
                           return_tensors="pt")) for i in range(0, len(text), batch_size)]


def ranked_teacher(supernet, teacher, space):
    """A supernet of `space` (the run's, widened to the study's shapes: its ops slice to any size)
    whose ops are the teacher's, heads and neurons most important first, on `supernet`'s factorised
    embedding (fixed in training, so the run's own)."""
    copy = Supernet(space, **supernet.init_kwargs())
    importance = teacher_importance(teacher, importance_batches(teacher.tokenizer))
    start_from_teacher(copy, teacher, importance, torch.ones(teacher.vocab_size))
    copy.embeddings.load_state_dict(supernet.embeddings.state_dict())
    return copy.eval()


def shape(text, teacher):
    """`E:neurons:heads` -> the six-layer architecture (the teacher's head size and width)."""
    embedding, neurons, heads = map(int, text.split(":"))
    layer = teacher.layer(0)
    ops = [f"mha:{heads}x{layer.head_size}", f"ffn:{neurons}"] * teacher.num_layers
    return Architecture.parse(f"E{embedding}:H{teacher.hidden_size}[{','.join(ops)}]")


def widened(space, archs):
    """`space` with the ops and embedding sizes of `archs` added: shapes off its grid are the point
    of the study."""
    ops = tuple(dict.fromkeys([*space.ops, *(code for arch in archs for code in arch.layers)]))
    sizes = tuple(sorted({*space.embedding_sizes, *(arch.embedding_size for arch in archs)}))
    return dataclasses.replace(space, ops=ops, embedding_sizes=sizes)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="A finished `nasbert compress` folder (its supernet gives the embedding).")
    parser.add_argument("--shapes", nargs="+", default=["128:1536:12", "160:1280:12", "176:1216:12",
                                                          "192:1104:12", "160:1536:8"],
                        help="E:neurons:heads per layer; the first is the reference (default: the 15M slice).")
    parser.add_argument("--pairs", type=int, default=1000)
    args = parser.parse_args()

    supernet, space, run_config = Supernet.from_run(supernet_run_of(Path(args.out_dir)))
    teacher = load_teacher()
    params = cost_model_for(Budget("params", float("inf")), run_config["seq_len"],  # as budgets count them
                            **teacher_dimensions(teacher, supernet))
    archs = {text: shape(text, teacher) for text in args.shapes}
    source = ranked_teacher(supernet, teacher, widened(space, archs.values()))
    pairs = corpus_sentence_pairs(count=args.pairs)
    reference = pair_cosines(teacher.model, teacher.tokenizer, pairs)
    print("| shape | params | corpus pairs (Spearman x 100) | vs first shape (95% CI) |\n|---|---|---|---|")
    first = None
    for text, arch in archs.items():
        model = from_supernet(source, arch, teacher).nasbert.eval()
        cosines = pair_cosines(model, teacher.tokenizer, pairs)
        versus = "" if first is None else "%+.2f [%+.2f, %+.2f]" % retention_difference(cosines, first, reference)
        first = cosines if first is None else first
        _, neurons, heads = text.split(":")
        print(f"| {arch.embedding_size} / {neurons} neurons / {heads} heads a layer "
              f"| {params.cost(arch) / 1e6:.2f}M | {retention_of(cosines, reference):.2f} | {versus} |", flush=True)


if __name__ == "__main__":
    main()
