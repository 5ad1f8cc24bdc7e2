"""Regression harness for paged-KV decode attention kernels (see DESIGN.md)."""

__version__ = "0.1.0"
