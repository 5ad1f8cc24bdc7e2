"""What every backend provides, and the registry that finds them by name.

A backend says *why* it cannot run a case (a skip with that reason, never a failure)
and otherwise returns a launcher that writes the case's output into a given tensor,
so the harness can poison that tensor with NaN before each launch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.inputs import CaseInputs
from harness.matrix import Case

Launcher = Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class Backend:
    """A named implementation of the decode-attention contract.

    `role` is "baseline" or "grouped" (the two columns of the seed's table) or "peer".
    `supports(case, device)` returns None when it can run, else the reason it cannot.
    `prepare(inputs)` does one-time work (plans, layout changes) and returns a launcher.
    `describe(inputs)` returns a short plan string for reports, or "".
    """

    name: str
    role: str
    supports: Callable[[Case, torch.device], str | None]
    prepare: Callable[[CaseInputs], Launcher]
    describe: Callable[[CaseInputs], str] = lambda inputs: ""


_REGISTRY: dict[str, Backend] = {}


def _origin(backend: Backend) -> tuple[str, str]:
    """Where a backend is defined: the module and qualified name of its prepare function."""
    return backend.prepare.__module__, backend.prepare.__qualname__


def register(backend: Backend) -> Backend:
    """Add a backend under its name. The same definition registering again replaces the
    old entry: its module ran again (importlib.reload, or pytester's in-process sessions,
    which drop the modules a session imported while this registry lives on). Another
    definition under a taken name is an error."""
    old = _REGISTRY.get(backend.name)
    if old is not None and _origin(old) != _origin(backend):
        raise ValueError(
            f"backend {backend.name!r} registered twice ({'.'.join(_origin(old))} and "
            f"{'.'.join(_origin(backend))})"
        )
    _REGISTRY[backend.name] = backend
    return backend


def get(name: str) -> Backend:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown backend {name!r} (known: {', '.join(sorted(_REGISTRY))})"
        ) from None


PEERS_ENV = "HARNESS_PEERS"  # "1": the default selection includes role="peer" backends


def peers_enabled() -> bool:
    return os.environ.get(PEERS_ENV, "") not in ("", "0", "false", "no")


def all_backends(include_peers: bool | None = None) -> list[Backend]:
    """Every registered backend, in name order. Peers (role "peer") only when
    `include_peers`, which defaults to HARNESS_PEERS=1 (what `run --peers` sets); a peer
    named explicitly (`get`, `--backends`) always runs."""
    _load_builtin()
    if include_peers is None:
        include_peers = peers_enabled()
    names = sorted(_REGISTRY)
    return [_REGISTRY[n] for n in names if include_peers or _REGISTRY[n].role != "peer"]


def _load_builtin() -> None:
    # Imported for their register() side effect; kept lazy so importing the registry is cheap.
    from harness.backends import cuda_kernels, peers, torch_ref  # noqa: F401
