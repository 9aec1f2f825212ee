"""Supernet training step vs. the same sampled architecture built as a plain standalone model.

For each of a few sampled sub-architectures (one candidate per block), times on the same batch:
  * `supernet`:   one block-wise distillation step of the supernet (sliced weights, AdamW over
                  the supernet's parameters),
  * `standalone`: one distillation step of the same architecture built from plain modules
                  (`Supernet.export_blocks`: copies of the slices, AdamW over them),
  * `teacher`:    the teacher forward pass alone (part of both steps),
and prints a markdown table: milliseconds, overhead (supernet / standalone, goal <= 1.15x),
tokens/s of the supernet step and the teacher's share of it. Timings are interleaved medians.

    python benchmarks/supernet_step.py                       # tiny preset, default teacher, CPU
    python benchmarks/supernet_step.py --device cuda --batch-size 64 --mixed-precision bf16
"""

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe_machine, time_interleaved  # noqa: E402

from nasbert_hf.architecture import Architecture  # noqa: E402
from nasbert_hf.blockwise import distillation_step  # noqa: E402
from nasbert_hf.cost import op_params  # noqa: E402
from nasbert_hf.data import DEFAULT_CORPUS, open_corpus_file  # noqa: E402
from nasbert_hf.search_space import load_search_space  # noqa: E402
from nasbert_hf.supernet import Supernet  # noqa: E402
from nasbert_hf.teacher import load_teacher  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="Search-space preset or file.")
    parser.add_argument("--teacher", default=None, help="Teacher folder or Hub name (default: all-MiniLM-L6-v2).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--architectures", type=int, default=4, help="Sampled architectures to time.")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="Also write the table to this markdown file.")
    return parser.parse_args(argv)


def real_text_batch(tokenizer, batch_size, seq_len):
    """`batch_size` packed `[CLS] ... [SEP]` rows of Wikipedia text from the embedded corpus."""
    with open_corpus_file(DEFAULT_CORPUS) as handle:
        text = handle.read(batch_size * seq_len * 8)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    piece = seq_len - 2
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows = [[cls, *ids[i * piece : (i + 1) * piece], sep] for i in range(batch_size)]
    input_ids = torch.tensor(rows)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def sampled_architectures(space, count, seed):
    """The largest candidate in every block, then uniform samples."""
    rng = random.Random(seed)
    hidden = space.max_hidden_size
    biggest_op = max(space.ops_for(hidden), key=lambda code: op_params(code, hidden))
    archs = [[Architecture(hidden, (biggest_op,) * space.slots_per_block)] * space.num_blocks]
    while len(archs) < count:
        archs.append([space.sample_block(rng) for _ in range(space.num_blocks)])
    return archs


def main(argv=None):
    args = parse_args(argv)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.mixed_precision)
    device = str(accelerator.device)
    torch.manual_seed(args.seed)
    teacher = load_teacher(args.teacher, device=device)
    space = load_search_space(args.config)
    supernet = Supernet(space, teacher.hidden_size).to(device)
    supernet_optimizer = torch.optim.AdamW(supernet.parameters(), lr=1e-4)
    batch = {k: v.to(device) for k, v in real_text_batch(teacher.tokenizer, args.batch_size, args.seq_len).items()}
    tokens = args.batch_size * args.seq_len

    rows = []
    for archs in sampled_architectures(space, args.architectures, args.seed):
        standalone = supernet.export_blocks(archs)
        standalone_optimizer = torch.optim.AdamW(standalone.parameters(), lr=1e-4)
        functions = {
            "supernet": lambda: distillation_step(
                accelerator, supernet, teacher, batch, supernet_optimizer, block_archs=archs
            ),
            "standalone": lambda: distillation_step(accelerator, standalone, teacher, batch, standalone_optimizer),
            "teacher": lambda: _teacher_pass(accelerator, teacher, batch, space.num_blocks),
        }
        times = time_interleaved(functions, args.repeats, warmup=2, device=device)
        rows.append((archs, times))

    lines = [
        f"Machine: {describe_machine(device)}; config `{args.config}`, teacher `{teacher.name}`, batch "
        f"{args.batch_size} x {args.seq_len} tokens, mixed precision `{args.mixed_precision}`.",
        "",
        "| sampled blocks | supernet step (ms) | standalone step (ms) | overhead | teacher (ms) | teacher share | supernet tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for archs, times in rows:
        lines.append(
            f"| {' / '.join(map(str, archs))} | {times['supernet'] * 1e3:.1f} | {times['standalone'] * 1e3:.1f} | "
            f"{times['supernet'] / times['standalone']:.3f}x | {times['teacher'] * 1e3:.1f} | "
            f"{times['teacher'] / times['supernet']:.0%} | {tokens / times['supernet']:,.0f} |"
        )
    total = {name: sum(times[name] for _, times in rows) for name in ("supernet", "standalone", "teacher")}
    lines.append(
        f"| **all ({len(rows)})** | {total['supernet'] * 1e3:.1f} | {total['standalone'] * 1e3:.1f} | "
        f"**{total['supernet'] / total['standalone']:.3f}x** | {total['teacher'] * 1e3:.1f} | "
        f"{total['teacher'] / total['supernet']:.0%} | {tokens * len(rows) / total['supernet']:,.0f} |"
    )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")


def _teacher_pass(accelerator, teacher, batch, num_blocks):
    with accelerator.autocast():
        teacher.block_states(batch["input_ids"], batch["attention_mask"], num_blocks)


if __name__ == "__main__":
    main()
