"""`nasbert latency-table`: measure per-op latencies on this machine, and the table's error."""

HELP = "Measure a per-op latency lookup table on this machine (and its prediction error)."


def add_arguments(parser):
    from ..latency import MAX_ERROR, MAX_ERROR_ENV, RUNTIMES, VALIDATION_MODELS

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
                        help="Validate the table on N random whole architectures and report the prediction error "
                        f"(0: {VALIDATION_MODELS} when calibrating, else none; default 20).")
    parser.add_argument("--max-error", type=float, metavar="FRACTION",
                        help=f"Largest median relative error the validation accepts before measuring again, then "
                        f"failing (default: ${MAX_ERROR_ENV}, else "
                        f"{', '.join(f'{device} {limit:g}' for device, limit in MAX_ERROR.items())}).")
    parser.add_argument("--out", required=True, help="JSON file to write the table to.")


def run(args):
    import statistics

    from ..latency import measure_latency_table, random_architectures
    from ..search_space import load_search_space

    space = load_search_space(args.config)
    ops = sorted({code for code in space.ops if code != "id"})
    # Calibration and check use different random architectures (seeds 1 and 0).
    calibration = random_architectures(list(space.ops), space.hidden_sizes, space.num_slots, args.calibrate, seed=1)
    check = random_architectures(list(space.ops), space.hidden_sizes, space.num_slots, args.check, seed=0)
    table = measure_latency_table(ops, space.hidden_sizes, device=args.device, batch_size=args.batch_size,
                                  seq_len=args.seq_len, embedding_size=args.embedding_size,
                                  vocab_size=args.vocab_size, repeats=args.repeats, calibration=calibration,
                                  validation=check or None, max_error=args.max_error)
    table.save(args.out)
    scales = ", ".join(f"H{h}: {scale:.2f}" for h, scale in sorted(table.op_scale.items()))
    print(f"Latency table ({table.device}, batch {table.batch_size}, seq {table.seq_len}; op scales {scales}) "
          f"written to {args.out}")
    rows = table.validation.get("models", [])
    if rows:
        print("| architecture | predicted (ms) | measured (ms) | error |\n|---|---|---|---|")
        for row in rows:
            print(f"| `{row['architecture']}` | {row['predicted_ms']:.2f} | {row['measured_ms']:.2f} "
                  f"| {row['error']:.1%} |")
        errors = [row["error"] for row in rows]
        print(f"\nMedian error over {len(rows)} architectures: {statistics.median(errors):.1%} "
              f"(max {max(errors):.1%}, mean {statistics.mean(errors):.1%}; limit {table.validation['limit']:.0%})")
