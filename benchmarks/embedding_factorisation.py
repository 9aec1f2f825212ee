"""How to factorise the teacher's word table at a fixed parameter count: a design study.

A student's word table is most of its parameters at small budgets (30,522 rows), so how it is cut
matters as much as which layers are kept. This study swaps only the word table of the teacher
(every other weight is the teacher's, nothing is trained) for tables of one parameter count:

- `svd`: the rank-E truncated SVD of the table (every token weighs the same);
- `weighted`: the rank-E weighted PCA the project uses (`teacher_init.frequency_weighted_directions`:
  every row weighted by its token's count in the corpus), E x V table plus an E -> H map;
- `two-tier Ex+K`: the K most frequent tokens keep the teacher's full row, and the other V - K get
  a rank-Ex weighted PCA of their own rows (fit on those rows alone, which is where its gain comes
  from), with K the most rows that keep the parameter count at that of `weighted` rank E
  (`--whole-table-directions`: also the first tail size on the whole table's directions, what
  leading slices of one shared table would give).

Each is scored with the retention probe (`nasbert_hf/retention.py`): the Spearman x 100 of the
pair cosines against the teacher's, on the corpus's sentence pairs (the text the counts come from)
and on the MRPC training pairs (held-out text), with the difference from `weighted` and its 95%
paired-bootstrap interval.

    python benchmarks/embedding_factorisation.py --data-dir ../shared/data/glue --embedding-size 128
"""

import argparse
import copy

import torch

from nasbert_hf.data import DEFAULT_CORPUS, open_corpus_file
from nasbert_hf.glue import load_glue_split
from nasbert_hf.retention import corpus_sentence_pairs, pair_cosines, retention_difference, retention_of
from nasbert_hf.teacher import load_teacher
from nasbert_hf.teacher_init import corpus_token_counts, frequency_weighted_directions


def corpus_counts(tokenizer, corpus, vocab_size, max_length=128):
    """How often each token id occurs in the corpus's lines, each line tokenised on its own."""
    with open_corpus_file(corpus) as handle:
        lines = [line for line in handle if line.strip()]
    batches = (tokenizer(lines[start:start + 512], truncation=True, max_length=max_length, padding=True,
                         return_tensors="pt") for start in range(0, len(lines), 512))
    return corpus_token_counts(batches, vocab_size)


def low_rank(rows, rank, directions):
    """`rows` approximated on the leading `rank` of `directions` (`frequency_weighted_directions`)."""
    components, mean = directions
    leading = components[:rank]
    return (rows - mean) @ leading.T @ leading + mean


def svd_low_rank(table, rank):
    u, s, v = torch.linalg.svd(table, full_matrices=False)
    return u[:, :rank] * s[:rank] @ v[:rank]


def two_tier(table, counts, tail_rank, full_rows, tail_directions=True):
    """The K = `full_rows` most frequent tokens' rows as they are, the others at `tail_rank`: on
    directions fit to those rows alone, or (`tail_directions=False`) to the whole table, as the
    leading slices of one shared table would give them."""
    tail = torch.argsort(counts, descending=True)[full_rows:]
    fit = (table[tail], counts[tail]) if tail_directions else (table, counts)
    result = table.clone()
    result[tail] = low_rank(table[tail], tail_rank, frequency_weighted_directions(*fit))
    return result


def factorised_params(vocab_size, width, rank, full_rows=0):
    """Parameters of a word table of `full_rows` full rows and `vocab_size - full_rows` rank-`rank`
    rows: the narrow table, its `rank -> width` map with bias, and the full rows."""
    return (vocab_size - full_rows) * rank + rank * width + width + full_rows * width


def variants(table, counts, rank, tail_ranks, whole_table_directions=False):
    """`(name, table, params)` of every factorisation at the parameter count of weighted rank `rank`."""
    vocab_size, width = table.shape
    budget = factorised_params(vocab_size, width, rank)
    yield f"weighted E{rank}", low_rank(table, rank, frequency_weighted_directions(table, counts)), budget
    yield f"svd E{rank}", svd_low_rank(table, rank), budget
    for index, tail_rank in enumerate(tail_ranks):
        full_rows = (budget - factorised_params(vocab_size, width, tail_rank)) // (width - tail_rank)
        params = factorised_params(vocab_size, width, tail_rank, full_rows)
        yield f"two-tier E{tail_rank}+{full_rows}", two_tier(table, counts, tail_rank, full_rows), params
        if index == 0 and whole_table_directions:
            yield (f"two-tier E{tail_rank}+{full_rows}, whole-table directions",
                   two_tier(table, counts, tail_rank, full_rows, tail_directions=False), params)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="GLUE folder (MRPC's training pairs: held-out text).")
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help="The text the token counts and corpus pairs come from.")
    parser.add_argument("--embedding-size", type=int, default=128, help="The rank whose parameter count every variant has.")
    parser.add_argument("--tail-sizes", type=int, nargs="+", default=[112, 96, 64])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--whole-table-directions", action="store_true",
                        help="Also the first tail size on the whole table's directions instead of the tail's own.")
    args = parser.parse_args()

    teacher = load_teacher(args.teacher)
    model, tokenizer = teacher.model, teacher.tokenizer
    table = model.embeddings.word_embeddings.weight.detach().double()
    counts = corpus_counts(tokenizer, args.corpus, table.shape[0])
    train = load_glue_split("mrpc", "train", args.data_dir)
    probes = {"corpus pairs": corpus_sentence_pairs(args.corpus, args.pairs),
              "MRPC train pairs (held out)": list(zip(train["sentence1"], train["sentence2"]))}
    references = {name: pair_cosines(model, tokenizer, pairs) for name, pairs in probes.items()}

    rows, baseline = [], None
    for name, factorised, params in variants(table, counts, args.embedding_size, args.tail_sizes,
                                                 args.whole_table_directions):
        student = copy.deepcopy(model)
        student.embeddings.word_embeddings.weight.data.copy_(factorised.to(model.dtype))
        cosines = {probe: pair_cosines(student, tokenizer, pairs) for probe, pairs in probes.items()}
        baseline = baseline or cosines
        cells = []
        for probe in probes:
            score = retention_of(cosines[probe], references[probe])
            if cosines is baseline:
                cells.append(f"{score:.2f}")
            else:
                difference, low, high = retention_difference(cosines[probe], baseline[probe], references[probe])
                cells.append(f"{score:.2f} ({difference:+.2f} [{low:+.2f}, {high:+.2f}])")
        rows.append(f"| {name} | {params:,} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)

    print(f"\nWord tables of the teacher at the parameter count of weighted rank {args.embedding_size}; the rest "
          "of the teacher as it is, untrained. Retention x 100 (difference from the first row, 95% CI):\n")
    print("| word table | params | " + " | ".join(probes) + " |")
    print("|---|---|" + "---|" * len(probes))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
