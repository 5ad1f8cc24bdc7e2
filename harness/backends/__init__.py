"""Backends: implementations of paged decode attention the harness checks and times."""

from harness.backends.base import Backend, Launcher, all_backends, get, register

__all__ = ["Backend", "Launcher", "all_backends", "get", "register"]
