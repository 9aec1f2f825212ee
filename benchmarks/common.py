"""Lets the benchmark scripts import the package's timing helpers by one short name."""

from nasbert_hf.timing import describe_machine, synchronize, time_interleaved  # noqa: F401
