"""Supernet ops inherited from the teacher vs. random init: block validation losses.

Tiny preset, default teacher (all-MiniLM-L6-v2) and corpus. The first `--fit-batches` training
batches fit the block-boundary bases (as supernet training does), the per-layer bases and the
teacher's head/neuron importance; `--eval-batches` validation batches score, per block, the widest
candidate (H256, [mha:4, ffn:768, mha:4, ffn:768]) and `--random-candidates` random candidates
(the same for every variant), at init and after `--steps` steps of block-wise distillation
(random candidates per step from `SearchSpace.sample_block`, AdamW at the preset's lr 6e-3,
linear schedule with the preset's warm-up, per-block clipping at 1.0). Variants:

- `random`: today's init (BERT's normal(0.02); the ops start near the identity);
- `block`:  inherit, every op of block b in block b's input basis (`inherit_from_teacher` without layer_bases);
- `layer`:  inherit, the ops of teacher layer l in the basis of layer l's input (`layer_bases`, recommended);
- `block-q0.71`, `layer-q1.41`, ...: the same with `query_scale`.

    python benchmarks/inheritance.py      # ~13 CPU-minutes: ~7 min on an idle 2-core machine
    python benchmarks/inheritance.py --steps 0 --variants random,block,layer,block-q0.71,block-q1.41
"""

import argparse
import inspect
import json
import random
import sys
import time
from itertools import islice
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import get_scheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nasbert_hf.architecture import Architecture  # noqa: E402
from nasbert_hf.arguments import read_config  # noqa: E402
from nasbert_hf.blockwise import distillation_step, masked_sse  # noqa: E402
from nasbert_hf.data import DEFAULT_CORPUS, build_mlm_datasets, mlm_dataloader  # noqa: E402
from nasbert_hf.inheritance import fit_layer_bases, inherit_from_teacher, teacher_importance  # noqa: E402
from nasbert_hf.search_space import load_search_space  # noqa: E402
from nasbert_hf.supernet import Supernet  # noqa: E402
from nasbert_hf.teacher import load_teacher  # noqa: E402
from nasbert_hf.training import full_batches_only, parameter_groups  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--variants", default="random,block,layer")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--fit-batches", type=int, default=8)
    parser.add_argument("--eval-batches", type=int, default=2)
    parser.add_argument("--random-candidates", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--basis", choices=("shared", "shared-whitened", "per-boundary"), default="shared",
                        help="Coordinates of the block projections (supernet training's --pca_basis).")
    parser.add_argument("--json", help="Also write the results here.")
    return parser.parse_args()


def widest_candidate(space):
    heads, inner = space.max_size("mha"), space.max_size("ffn")
    layers = tuple(f"mha:{heads}" if slot % 2 == 0 else f"ffn:{inner}" for slot in range(space.slots_per_block))
    return Architecture(space.max_hidden_size, layers)


@torch.no_grad()
def block_losses(supernet, eval_states, candidates):
    """`{block: [mse of each candidate]}` on the held-out teacher states."""
    supernet.eval()
    losses = {}
    for block, archs in enumerate(candidates):
        losses[block] = []
        for arch in archs:
            total, count = 0.0, 0.0
            for states, mask in eval_states:
                sse, elements = supernet.block_sse(block, arch, states[block], states[block + 1], mask)
                total, count = total + sse.item(), count + elements.item()
            losses[block].append(total / count)
    supernet.train()
    return losses


def mean_baseline(eval_states, bases):
    """Block loss of predicting mu_{b+1} for every token."""
    results = []
    for block in range(len(bases) - 1):
        total, count = 0.0, 0.0
        mean = bases[block + 1][2]
        for states, mask in eval_states:
            target = states[block + 1]
            sse, elements = masked_sse(mean.expand_as(target), target, mask)
            total, count = total + sse.item(), count + elements.item()
        results.append(total / count)
    return results


def embedding_kwargs(teacher):
    """The teacher's vocabulary and positions, for a supernet that also searches the embedding width."""
    if "vocab_size" not in inspect.signature(Supernet).parameters:
        return {}
    config = teacher.model.config
    return {
        "vocab_size": teacher.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": getattr(config, "type_vocab_size", 2),
    }


def build_supernet(space, teacher, bases, seed):
    torch.manual_seed(seed)
    supernet = Supernet(
        space,
        teacher.hidden_size,
        hidden_act=teacher.model.config.hidden_act,
        layer_norm_eps=teacher.model.config.layer_norm_eps,
        block_projection="pca",
        **embedding_kwargs(teacher),
    )
    supernet.fit_projections(bases)
    return supernet


def apply_variant(variant, supernet, teacher, bases, layer_bases, importance):
    name, _, scale = variant.partition("-q")
    if name == "random":
        return
    kwargs = {"query_scale": float(scale) if scale else 1.0}
    if name == "layer":
        kwargs["layer_bases"] = layer_bases
    elif name != "block":
        raise ValueError(f"unknown variant {variant!r}")
    inherit_from_teacher(supernet, teacher, bases, importance, **kwargs)


def train(supernet, teacher, space, train_loader, steps, lr, warmup, seed):
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(parameter_groups(supernet, 0.01), lr=lr)
    scheduler = get_scheduler("linear", optimizer, min(warmup, steps), steps)
    rng = random.Random(seed)
    batches = iter(train_loader)
    for _ in range(steps):
        batch = next(batches)
        archs = [space.sample_block(rng) for _ in range(space.num_blocks)]
        distillation_step(accelerator, supernet, teacher, batch, optimizer, scheduler, archs, max_grad_norm=1.0)


def summary(losses):
    """(widest per block, sum of widest, sum over blocks of the mean random candidate)."""
    widest = [values[0] for values in losses.values()]
    randoms = [sum(values[1:]) / max(len(values) - 1, 1) for values in losses.values()]
    return widest, sum(widest), sum(randoms)


def main():
    args = parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    teacher = load_teacher()
    space = load_search_space(args.config)
    training = read_config(args.config).section("training")
    splits = build_mlm_datasets(
        DEFAULT_CORPUS, teacher.tokenizer, seq_len=args.seq_len, seed=args.seed,
        max_train_sequences=training.get("max_train_sequences"),
    )
    loader = lambda split, shuffle: full_batches_only(  # noqa: E731
        mlm_dataloader(splits[split], teacher.tokenizer, args.batch_size, shuffle=shuffle, seed=args.seed)
    )
    train_loader = loader("train", True)
    fit = list(islice(train_loader, args.fit_batches))  # the first training batches, as supernet training does
    layer_bases = fit_layer_bases(teacher, fit, space.max_hidden_size, shared=args.basis != "per-boundary",
                                  whiten=args.basis != "shared")
    # The block-boundary bases are the layer bases at the boundaries (same states, same moments):
    # what `fit_boundary_bases(teacher, fit, num_blocks, max_hidden_size)` returns.
    bases = [layer_bases[layer] for layer in teacher.block_boundaries(space.num_blocks)]
    importance = teacher_importance(teacher, fit)
    eval_states = [
        (teacher.block_states(batch["input_ids"], batch["attention_mask"], space.num_blocks), batch["attention_mask"])
        for batch in islice(loader("validation", False), args.eval_batches)
    ]
    rng = random.Random(args.seed + 1)
    candidates = [
        [widest_candidate(space)] + [space.sample_block(rng) for _ in range(args.random_candidates)]
        for _ in range(space.num_blocks)
    ]
    baseline = mean_baseline(eval_states, bases)
    print(f"setup {time.perf_counter() - started:.0f}s; predict-the-mean: {[round(v, 4) for v in baseline]}")
    print("candidates:", [[str(arch) for arch in archs] for archs in candidates])

    results = {"baseline": baseline, "candidates": [[str(a) for a in archs] for archs in candidates], "runs": {}}
    for variant in args.variants.split(","):
        supernet = build_supernet(space, teacher, bases, args.seed)
        apply_variant(variant, supernet, teacher, bases, layer_bases, importance)
        run = {"init": block_losses(supernet, eval_states, candidates)}
        if args.steps:
            train(supernet, teacher, space, train_loader, args.steps, training["learning_rate"],
                  training.get("warmup_steps", 0), args.seed)
            run[f"{args.steps} steps"] = block_losses(supernet, eval_states, candidates)
        results["runs"][variant] = run
        print(f"{variant} done at {time.perf_counter() - started:.0f}s")

    print()
    print("| init | when | widest: block 0 | block 1 | block 2 | widest, sum | random candidates, sum of block means |")
    print("|---|---|---|---|---|---|---|")
    print(f"| predict the mean | | {' | '.join(f'{v:.4f}' for v in baseline)} | {sum(baseline):.4f} | {sum(baseline):.4f} |")
    for variant, run in results["runs"].items():
        for when, losses in run.items():
            widest, widest_sum, random_sum = summary(losses)
            print(f"| {variant} | {when} | {' | '.join(f'{v:.4f}' for v in widest)} | {widest_sum:.4f} | {random_sum:.4f} |")
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
