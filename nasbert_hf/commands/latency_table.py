"""`nasbert latency-table`: measure per-op latencies on this machine, and the table's error."""

HELP = "Measure a per-op latency lookup table on this machine (and its prediction error)."


def add_arguments(parser):
    from ..latency import RUNTIMES

    parser.add_argument("--config", default="tiny", help="Search space whose ops and hidden sizes to measure: a "
                        "preset, a YAML/JSON config, or a run's run_config.json (default: tiny).")
    parser.add_argument("--device", default="cpu", choices=sorted(RUNTIMES),
                        help="cpu and cuda time eager PyTorch, ort-cpu ONNX Runtime on CPU (default: cpu).")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--embedding-size", type=int, default=384, help="Embedding width (the teacher's; default 384).")
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--calibrate", type=int, default=12, metavar="N",
                        help="Calibrate the table on N random whole architectures (0: skip; default 12).")
    parser.add_argument("--check", type=int, default=20, metavar="N",
                        help="Report the prediction error on N random whole architectures (0: skip).")
    parser.add_argument("--out", required=True, help="JSON file to write the table to.")


def run(args):
    import statistics

    from ..latency import measure_latency_table, prediction_error, random_architectures
    from ..search_space import load_search_space

    space = load_search_space(args.config)
    ops = sorted({code for code in space.ops if code != "id"})
    # Calibration and check use different random architectures (seeds 1 and 0).
    calibration = random_architectures(list(space.ops), space.hidden_sizes, space.num_slots, args.calibrate, seed=1)
    table = measure_latency_table(ops, space.hidden_sizes, device=args.device, batch_size=args.batch_size,
                                  seq_len=args.seq_len, embedding_size=args.embedding_size,
                                  vocab_size=args.vocab_size, repeats=args.repeats, calibration=calibration)
    table.save(args.out)
    scales = ", ".join(f"H{h}: {scale:.2f}" for h, scale in sorted(table.op_scale.items()))
    print(f"Latency table ({table.device}, batch {table.batch_size}, seq {table.seq_len}; op scales {scales}) "
          f"written to {args.out}")
    if args.check:
        archs = random_architectures(list(space.ops), space.hidden_sizes, space.num_slots, args.check, seed=0)
        rows, median = prediction_error(table, archs, repeats=args.repeats)
        print("| architecture | predicted (ms) | measured (ms) | error |\n|---|---|---|---|")
        for arch, (predicted, measured, error) in zip(archs, rows):
            print(f"| `{arch}` | {predicted:.2f} | {measured:.2f} | {error:.1%} |")
        print(f"\nMedian error over {len(rows)} architectures: {median:.1%} "
              f"(max {max(r[2] for r in rows):.1%}, mean {statistics.mean(r[2] for r in rows):.1%})")
