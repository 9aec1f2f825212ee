"""Forward latency of a `from_bert`-converted NasBert model vs. the original `BertModel`.

Same weights, same inputs, same run, measured interleaved. Writes a markdown table.

    python benchmarks/modeling_latency.py                 # CPU, the table in docs/benchmarks.md
    python benchmarks/modeling_latency.py --device cuda   # GPU
"""

import argparse

import torch
from common import describe_machine, time_interleaved
from transformers import BertConfig, BertModel

from nasbert_hf import from_bert

SHAPES = [(4, 256), (4, 512)]  # (layers, hidden): BERT-mini and BERT-small shapes


def bert_of_shape(layers, hidden):
    return BertConfig(
        num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=hidden // 64, intermediate_size=4 * hidden
    )


def measure(layers, hidden, batch, seq_len, device, repeats):
    bert = BertModel(bert_of_shape(layers, hidden)).eval().to(device)
    nasbert = from_bert(bert).eval().to(device)
    input_ids = torch.randint(1000, 30000, (batch, seq_len), device=device)
    attention_mask = torch.ones_like(input_ids)

    def call(model):
        def forward():
            with torch.inference_mode():
                model(input_ids, attention_mask=attention_mask)
        return forward

    times = time_interleaved({"bert": call(bert), "nasbert": call(nasbert)}, repeats, device=device)
    return times["bert"], times["nasbert"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"Machine: {describe_machine(args.device)}; sequence length {args.seq_len}; "
          f"median of {args.repeats} interleaved runs\n")
    print("| shape | batch | BertModel (ms) | NasBertModel (ms) | ratio |")
    print("|---|---|---|---|---|")
    for layers, hidden in SHAPES:
        for batch in args.batches:
            repeats = args.repeats if batch == 1 else max(5, args.repeats // 3)
            bert, nasbert = measure(layers, hidden, batch, args.seq_len, args.device, repeats)
            print(f"| L{layers}/H{hidden} | {batch} | {bert * 1e3:.2f} | {nasbert * 1e3:.2f} | {nasbert / bert:.3f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
