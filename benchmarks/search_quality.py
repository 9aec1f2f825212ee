"""How much better is the searched model than the alternatives at an equal budget?

Same supernet, same validation batches, same run; every model is scored by the real validation
loss of the whole assembled model (`evaluate_architecture`, lower is better):

- searched: the pipeline's choice (exact search over the candidate tables, top-k re-scored);
- random: the best of N random architectures of the whole search space within the budget;
- uniform: the best BERT-shaped architecture within the budget (alternating one `mha` and one
  `ffn` choice of the space at one hidden size, as `from_bert` shapes are).

    python benchmarks/search_quality.py nasbert-out/supernet-run --budgets params=1M params=2M
"""

import argparse
import itertools
import random

from nasbert_hf import Architecture
from nasbert_hf.cost import ParamsCost
from nasbert_hf.pipeline import CachedTeacher, validation_batches
from nasbert_hf.search import Budget, load_candidates, search
from nasbert_hf.supernet import Supernet, evaluate_architecture
from nasbert_hf.teacher import load_teacher


def random_within(space, limit, count, seed, cost=ParamsCost(), max_tries=200_000):
    rng, found = random.Random(seed), []
    for _ in range(max_tries):
        if len(found) == count:
            break
        hidden = rng.choice(space.hidden_sizes)
        arch = Architecture(hidden, tuple(rng.choice(space.ops_for(hidden)) for _ in range(space.num_slots)))
        if cost.cost(arch) <= limit:
            found.append(arch)
    return found


def uniform_within(space, limit, cost=ParamsCost()):
    """Every BERT-shaped architecture (mha:h, ffn:d repeated) of the space within the budget."""
    shapes = []
    for hidden in space.hidden_sizes:
        ops = space.ops_for(hidden)
        for mha, ffn in itertools.product([c for c in ops if c.startswith("mha")], [c for c in ops if c.startswith("ffn")]):
            arch = Architecture(hidden, (mha, ffn) * (space.num_slots // 2))
            if cost.cost(arch) <= limit:
                shapes.append(arch)
    return shapes


def best(archs, score):
    scored = sorted((score(arch), str(arch)) for arch in archs)
    return scored[0] if scored else (float("nan"), "none fits")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--budgets", nargs="+", required=True)
    parser.add_argument("--random", type=int, default=100, help="Random architectures per budget.")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4, help="Validation batches per score.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    supernet, space, run_config = Supernet.from_run(args.run_dir)
    teacher = load_teacher(run_config["teacher"])
    cached = CachedTeacher(teacher)
    batches = validation_batches(run_config, teacher, args.batches)
    tables = load_candidates(f"{args.run_dir}/candidates.json")

    def score(arch):
        return evaluate_architecture(supernet, cached, arch, batches)

    print(f"Run {args.run_dir}; {args.batches} validation batches of {run_config['training']['eval_batch_size']} x "
          f"{run_config['seq_len']} tokens; loss = MSE to the teacher's last hidden states (lower is better)\n")
    print("| budget | searched | best of random | best uniform (BERT-shaped) | random / searched | uniform / searched |")
    print("|---|---|---|---|---|---|")
    for text in args.budgets:
        budget = Budget.parse(text)
        searched = best([r.architecture for r in search(tables, ParamsCost(), budget.limit, k=args.top_k, per_hidden_size=True)], score)
        randoms = best(random_within(space, budget.limit, args.random, args.seed), score)
        uniform = best(uniform_within(space, budget.limit), score)
        print(f"| {budget} | {searched[0]:.4f} `{searched[1]}` | {randoms[0]:.4f} | {uniform[0]:.4f} `{uniform[1]}` | "
              f"{randoms[0] / searched[0]:.3f}x | {uniform[0] / searched[0]:.3f}x |", flush=True)


if __name__ == "__main__":
    main()
