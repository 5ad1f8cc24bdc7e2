"""ctypes binding of the CUDA library: argument checks, plan, workspace, launch.

torch is imported lazily so that `import kernels` (and the cost model) works on machines
without torch, a GPU or nvcc; the library is built/loaded at the first launch.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .plan import TILES, Plan, kv_kind, plan_for_occupancy

if TYPE_CHECKING:
    import torch

ABI_VERSION = 3
KERNELS = {"baseline": 0, "grouped": 1}
_F16, _BF16, _E4M3 = 0, 1, 2
HEAD_DIMS = (64, 128, 256)
PAGE_SIZES = (16, 32, 64)
MAX_Q_LEN = 16
MAX_GROUP = 16

_lock = threading.Lock()
_state: dict[str, Any] = {}


def configure(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the C ABI's signatures on a loaded library (and check its ABI version)."""
    lib.pd_abi_version.restype = ctypes.c_int
    if lib.pd_abi_version() != ABI_VERSION:
        raise RuntimeError(f"library ABI {lib.pd_abi_version()} != expected {ABI_VERSION}")
    lib.pd_error_string.restype = ctypes.c_char_p
    lib.pd_error_string.argtypes = [ctypes.c_int]
    lib.pd_workspace_bytes.restype = ctypes.c_size_t
    lib.pd_workspace_bytes.argtypes = [ctypes.c_int] * 5
    lib.pd_grouped_config.restype = ctypes.c_int
    lib.pd_grouped_config.argtypes = [ctypes.c_int] * 3 + [ctypes.POINTER(ctypes.c_int)] * 2
    lib.pd_grouped_occupancy.restype = ctypes.c_int
    lib.pd_grouped_occupancy.argtypes = [ctypes.c_int] * 4 + [ctypes.POINTER(ctypes.c_int)]
    lib.pd_grouped_occupancy_for.restype = ctypes.c_int
    lib.pd_grouped_occupancy_for.argtypes = [ctypes.c_int] * 5 + [ctypes.POINTER(ctypes.c_int)]
    lib.pd_grouped_balanced.restype = ctypes.c_int
    lib.pd_grouped_balanced.argtypes = [ctypes.c_int] * 5 + [ctypes.POINTER(ctypes.c_int)]
    lib.pd_paged_decode.restype = ctypes.c_int
    lib.pd_paged_decode.argtypes = (
        [ctypes.c_int]
        + [ctypes.c_void_p] * 5
        + [ctypes.c_int] * 9
        + [ctypes.c_float] * 3
        + [ctypes.c_int] * 4
        + [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    )
    return lib


def package_defines() -> tuple[str, ...]:
    """Compile-time defines of this package's library: a BUILD_DEFINES file beside the
    package (one NAME=VALUE a line; how a planted-slowdown copy of `kernels/` is made)
    wins over the HARNESS_KERNEL_DEFINES variable (comma-separated; set by `--define`)."""
    path = Path(__file__).with_name("BUILD_DEFINES")
    if path.exists():
        lines = path.read_text().splitlines()
    else:
        lines = os.environ.get("HARNESS_KERNEL_DEFINES", "").split(",")
    return tuple(sorted(x.strip() for x in lines if x.strip() and not x.startswith("#")))


def _load() -> tuple[ctypes.CDLL, Any]:
    """Build (if needed) and load the library once per process."""
    from . import build as _build

    with _lock:
        if "lib" not in _state:
            res = _build.build(defines=package_defines())
            _state["lib"], _state["build"] = configure(ctypes.CDLL(str(res.path))), res
        return _state["lib"], _state["build"]


def library_info(build: bool = True) -> dict[str, Any] | None:
    """Path, build key, archs and nvcc version of the library; with build=False, None
    unless this process already loaded it (so callers can report it without compiling)."""
    if not build and "build" not in _state:
        return None
    _, res = _load()
    return {
        "path": str(res.path),
        "key": res.key,
        "archs": list(res.archs),
        "nvcc_version": res.nvcc_version,
        "defines": list(res.defines),
        "abi": ABI_VERSION,
    }


def cuda_available() -> bool:
    """True when torch is importable and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _check_aligned(name: str, t: torch.Tensor) -> None:
    """The kernels copy q and the cache in 16-byte pieces (cp.async, TMA) and store out in
    8-byte ones: a tensor starting elsewhere (a view with an element offset) would be a
    misaligned-address fault, which leaves the CUDA context unusable for every later case."""
    ptr = t.data_ptr()
    _check(
        ptr % 16 == 0,
        f"{name} must start at a 16-byte aligned address, not {ptr:#x} (a view with an element offset?)",
    )


def _as_float(v: object) -> float:
    """v as a float, or NaN (which fails every range check) if it is not a number."""
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


@functools.lru_cache(maxsize=64)
def _sm_count(index: int) -> int:
    import torch

    return int(torch.cuda.get_device_properties(index).multi_processor_count)


_DTYPE_CODES = {"fp16": _F16, "bf16": _BF16, "fp8": _E4M3}


def _query(fn: str, *args: int) -> int:
    """lib.<fn>(*args, &out) -> out; a RuntimeError naming fn and CUDA's message if it fails."""
    lib, _ = _load()
    out = ctypes.c_int(0)
    rc = getattr(lib, fn)(*args, ctypes.byref(out))
    if rc:
        raise RuntimeError(f"{fn}: {lib.pd_error_string(rc).decode()}")
    return out.value


def grouped_occupancy(
    tile_rows: int, head_dim: int, q_dtype: str, kv_dtype: str, rows: int | None = None
) -> int:
    """Resident CTAs per SM of the grouped kernel on the current device (from CUDA): with
    `rows` (q_len x group), of the kernel such a problem's `tile_rows` tiles actually run
    here (on sm_90 the wgmma kernels); without, of the mma.sync kernel that kernels.plan
    mirrors."""
    args = (tile_rows, head_dim, _DTYPE_CODES[q_dtype], _DTYPE_CODES[kv_dtype])
    if rows is None:
        return _query("pd_grouped_occupancy", *args)
    return _query("pd_grouped_occupancy_for", *args, int(rows))


def grouped_balanced(tile_rows: int, head_dim: int, q_dtype: str, kv_dtype: str, rows: int) -> bool:
    """Whether the kernel a `rows`-row problem's `tile_rows` tiles run on the current device
    takes a balanced grid (kernels.plan's balanced_shape)."""
    codes = (_DTYPE_CODES[q_dtype], _DTYPE_CODES[kv_dtype])
    return bool(_query("pd_grouped_balanced", tile_rows, head_dim, *codes, int(rows)))


@functools.lru_cache(maxsize=1024)
def _device_occupancy(
    device: int, head_dim: int, q_dtype: str, kv_dtype: str, rows: int
) -> tuple[tuple[int, int, bool], ...]:
    """(tile, resident CTAs per SM, takes a balanced grid) of each tile on `device`."""
    import torch

    with torch.cuda.device(device):
        return tuple(
            (
                t,
                grouped_occupancy(t, head_dim, q_dtype, kv_dtype, rows),
                grouped_balanced(t, head_dim, q_dtype, kv_dtype, rows),
            )
            for t in TILES
        )


@functools.lru_cache(maxsize=4096)
def device_plan(
    *shape: int,
    kv_dtype: str,
    q_dtype: str = "bf16",
    device: int | None = None,
    tile_rows: int | None = None,
    num_splits: int | None = None,
    balanced: bool | None = None,
    tail: bool | None = None,
) -> Plan:
    """kernels.plan for a CUDA device (default: the current one). `shape` is plan's first
    six arguments (batch, q_len, num_qo_heads, num_kv_heads, head_dim, max_kv_len); the
    device adds its SM count, the occupancy of the kernels each tile runs there (on sm_90
    the wgmma kernels hold other numbers of CTAs than the mma.sync mirror the pure model
    assumes) and which of them take a balanced grid. `tile_rows` / `num_splits` /
    `balanced` / `tail` force a choice, as in plan."""
    import torch

    if len(shape) != 6:
        raise TypeError(f"device_plan takes plan's 6 shape arguments, got {len(shape)}")
    _, q_len, hq, hkv, head_dim, _ = shape
    dev = torch.cuda.current_device() if device is None else int(device)
    kv, q = kv_kind(kv_dtype), kv_kind(q_dtype)  # the same dtype names for q
    occ = _device_occupancy(dev, head_dim, q, kv if kv == "fp8" else q, q_len * (hq // max(1, hkv)))
    return plan_for_occupancy(
        *shape,
        _sm_count(dev),
        kv,
        occ,
        tile_rows=tile_rows,
        num_splits=num_splits,
        balanced=balanced,
        tail=tail,
    )


def paged_decode(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    page_table: torch.Tensor,
    kv_lens: torch.Tensor,
    q_len: int,
    kernel: str = "grouped",
    sm_scale: float | None = None,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
    out: torch.Tensor | None = None,
    plan: Plan | None = None,
) -> torch.Tensor:
    """Causal paged decode attention; returns `out` ([batch*q_len, hq, D], q's dtype).

    Query token i of request b sits at position kv_lens[b]-q_len+i and attends KV positions
    0..=that. The grouped plan is derived from page_table's width (max_pages*page_size is
    the longest KV a request can have), so no device->host sync happens per call; for the
    same reason kv_lens is not read on the host: each must satisfy
    q_len <= kv_lens[b] <= max_pages*page_size (the caller's contract). Every tensor must be
    contiguous on one CUDA device, and q, kv_cache and out must start 16-byte aligned (a
    fresh allocation does; a view with an odd element offset is refused).
    """
    import torch

    _check(kernel in KERNELS, f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
    # Dequantization scales: positive and finite (the kernels fold k_scale into the softmax
    # scale, whose sign their rescaling thresholds rely on).
    for name, v in (("k_scale", k_scale), ("v_scale", v_scale)):
        _check(
            0 < _as_float(v) < float("inf"), f"{name} must be a positive finite number, got {v!r}"
        )
    tensors = {"q": q, "kv_cache": kv_cache, "page_table": page_table, "kv_lens": kv_lens}
    for name, t in tensors.items():
        _check(isinstance(t, torch.Tensor), f"{name} must be a torch.Tensor")
    for name, t in (("q", q), ("kv_cache", kv_cache), ("out", out)):
        if isinstance(t, torch.Tensor):
            _check_aligned(name, t)
    for name, t in tensors.items():
        _check(t.is_cuda, f"{name} must be a CUDA tensor (got device {t.device})")
        _check(t.is_contiguous(), f"{name} must be contiguous")
    dev = q.device
    for name, t in tensors.items():
        _check(t.device == dev, f"{name} is on {t.device} but q is on {dev}")
    _check(q.dtype in (torch.bfloat16, torch.float16), f"q must be bf16 or fp16, got {q.dtype}")
    fp8 = getattr(torch, "float8_e4m3fn", None)
    _check(
        kv_cache.dtype == q.dtype or (fp8 is not None and kv_cache.dtype == fp8),
        f"kv_cache dtype {kv_cache.dtype} must equal q's ({q.dtype}) or be float8_e4m3fn",
    )
    _check(
        q.dim() == 3, f"q must be [batch*q_len, num_qo_heads, head_dim], got shape {tuple(q.shape)}"
    )
    _check(
        kv_cache.dim() == 5 and kv_cache.shape[1] == 2,
        f"kv_cache must be [num_pages, 2, page_size, num_kv_heads, head_dim], got {tuple(kv_cache.shape)}",
    )
    _check(
        page_table.dtype == torch.int32 and page_table.dim() == 2,
        f"page_table must be int32 [batch, max_pages], got {page_table.dtype} {tuple(page_table.shape)}",
    )
    _check(
        kv_lens.dtype == torch.int32 and kv_lens.dim() == 1,
        f"kv_lens must be int32 [batch], got {kv_lens.dtype} {tuple(kv_lens.shape)}",
    )
    q_len = int(q_len)
    _check(1 <= q_len <= MAX_Q_LEN, f"q_len must be in 1..{MAX_Q_LEN}, got {q_len}")
    batch = page_table.shape[0]
    _check(
        kv_lens.shape[0] == batch,
        f"kv_lens has {kv_lens.shape[0]} entries, page_table {batch} rows",
    )
    _check(
        batch >= 1 and q.shape[0] == batch * q_len,
        f"q has {q.shape[0]} tokens, expected batch*q_len = {batch}*{q_len}",
    )
    _, hq, d = q.shape
    _, _, page_size, hkv, dk = kv_cache.shape
    _check(d in HEAD_DIMS, f"head_dim must be one of {HEAD_DIMS}, got {d}")
    _check(dk == d, f"kv_cache head_dim {dk} != q head_dim {d}")
    _check(page_size in PAGE_SIZES, f"page_size must be one of {PAGE_SIZES}, got {page_size}")
    _check(
        hkv >= 1 and hq % hkv == 0, f"num_qo_heads {hq} must be a multiple of num_kv_heads {hkv}"
    )
    _check(hq // hkv <= MAX_GROUP, f"GQA group {hq // hkv} > {MAX_GROUP} is not supported")
    page_bytes = 2 * page_size * hkv * dk * kv_cache.element_size()
    _check(
        page_bytes < 2**31,
        f"a KV page (K and V of all {hkv} KV heads) is {page_bytes} bytes; the kernels need < 2 GiB",
    )
    _check(page_table.shape[1] >= 1, "page_table needs at least one column")
    scale = float(d) ** -0.5 if sm_scale is None else float(sm_scale)
    _check(
        scale > 0 and scale != float("inf"),
        f"sm_scale must be a positive finite number, got {scale}",
    )
    if out is None:
        out = torch.empty_like(q)
    else:
        _check(
            isinstance(out, torch.Tensor)
            and out.shape == q.shape
            and out.dtype == q.dtype
            and out.device == dev
            and out.is_contiguous(),
            f"out must be a contiguous {q.dtype} tensor of shape {tuple(q.shape)} on {dev}",
        )

    lib, _ = _load()
    kv_code = _E4M3 if kv_cache.dtype != q.dtype else (_BF16 if q.dtype == torch.bfloat16 else _F16)
    q_code = _BF16 if q.dtype == torch.bfloat16 else _F16
    kv_name = "fp8" if kv_code == _E4M3 else ("bf16" if q_code == _BF16 else "fp16")
    shape = (hq, hkv, d, page_size, page_table.shape[1], q_code, kv_code, scale, k_scale, v_scale)
    with torch.cuda.device(dev):
        if kernel != "grouped":
            _launch(lib, kernel, q, kv_cache, page_table, kv_lens, out, q_len, shape, None)
            return out
        p = plan or device_plan(
            batch,
            q_len,
            hq,
            hkv,
            d,
            page_table.shape[1] * page_size,
            kv_dtype=kv_name,
            q_dtype="bf16" if q_code == _BF16 else "fp16",
            device=dev.index if dev.index is not None else torch.cuda.current_device(),
        )
        if p.tail is None:
            _launch(lib, kernel, q, kv_cache, page_table, kv_lens, out, q_len, shape, p)
            return out
        # A two-launch plan: the first requests under p, the last tail_batch under p.tail.
        head = batch - p.tail_batch
        _check(
            1 <= head < batch,
            f"plan {p} leaves {p.tail_batch} of its requests to a second launch; this call has {batch}",
        )
        r = head * q_len
        for reqs, rows, part in (
            (slice(head), slice(r), p),
            (slice(head, None), slice(r, None), p.tail),
        ):
            _launch(
                lib,
                kernel,
                q[rows],
                kv_cache,
                page_table[reqs],
                kv_lens[reqs],
                out[rows],
                q_len,
                shape,
                part,
            )
    return out


def _launch(
    lib: ctypes.CDLL,
    kernel: str,
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    page_table: torch.Tensor,
    kv_lens: torch.Tensor,
    out: torch.Tensor,
    q_len: int,
    shape: tuple,
    p: Plan | None,
) -> None:
    """One pd_paged_decode call over page_table's requests (checked tensors; `shape`: heads,
    head_dim, page size, table width, dtype codes and scales) under one-launch plan p (None:
    the baseline), with its split workspace."""
    import torch

    hq, hkv, d, page_size, width, q_code, kv_code, scale, k_scale, v_scale = shape
    batch = page_table.shape[0]
    tile = splits = tokens = balanced_ctas = ws_bytes = 0
    workspace = None
    if p is not None:
        tile, splits, tokens, balanced_ctas = (
            p.tile_rows,
            p.num_splits,
            p.kv_tokens_per_split,
            p.balanced_ctas,
        )
        ws_bytes = int(lib.pd_workspace_bytes(batch, q_len, hq, d, splits))
        if ws_bytes:
            workspace = torch.empty(ws_bytes, dtype=torch.uint8, device=q.device)
    stream = torch.cuda.current_stream(q.device).cuda_stream
    rc = lib.pd_paged_decode(
        KERNELS[kernel],
        q.data_ptr(),
        kv_cache.data_ptr(),
        page_table.data_ptr(),
        kv_lens.data_ptr(),
        out.data_ptr(),
        batch,
        q_len,
        hq,
        hkv,
        d,
        page_size,
        width,
        q_code,
        kv_code,
        scale,
        float(k_scale),
        float(v_scale),
        tile,
        splits,
        tokens,
        balanced_ctas,
        workspace.data_ptr() if workspace is not None else None,
        ws_bytes,
        stream,
    )
    if rc:
        raise RuntimeError(
            f"paged_decode ({kernel}) failed: {lib.pd_error_string(rc).decode()} (code {rc})"
        )
