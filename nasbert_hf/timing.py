"""Wall-clock timing with interleaved repetitions, shared by latency tables and benchmarks."""

import platform
import statistics
import time

import torch


def describe_machine(device="cpu"):
    if str(device).startswith("cuda"):
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def synchronize(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(functions, repeats, warmup=3, device="cpu"):
    """Median seconds per call of each zero-argument function, measured in alternating order so
    that machine noise (other jobs, frequency changes) falls on all of them alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    samples = {name: [] for name in functions}
    names = list(functions)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            synchronize(device)
            start = time.perf_counter()
            functions[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}
