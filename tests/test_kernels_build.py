"""Compile every kernel source through kernels.build (this is what fails CI on a broken
kernel), check the C ABI without a GPU, and check nvcc errors surface as BuildError."""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import pytest

from kernels import build as kb
from kernels.plan import TILES, kernel_shape

try:
    kb.find_nvcc()
    HAVE_NVCC = True
except kb.BuildError:
    HAVE_NVCC = False
needs_nvcc = pytest.mark.skipif(not HAVE_NVCC, reason="nvcc not found")


def _no_gpu() -> bool:
    """No CUDA device here: a call that gets past the argument checks fails at its launch,
    so it may pass never-dereferenced pointers (on a GPU it would run with them)."""
    import torch

    return not torch.cuda.is_available()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> kb.BuildResult:
    """The full fat binary (default archs), built once into a temp cache."""
    return kb.build(cache_dir=tmp_path_factory.mktemp("kcache"))


@needs_nvcc
def test_every_source_compiles(built: kb.BuildResult) -> None:
    assert built.path.is_file() and not built.cached
    units, _ = kb.sources()
    assert {u.name for u in units} >= {"api.cu", "baseline.cu", "grouped_d64.cu"}
    again = kb.build(cache_dir=built.path.parent.parent)
    assert again.cached and again.key == built.key  # unchanged sources hit the cache


@needs_nvcc
def test_c_abi_without_gpu(built: kb.BuildResult) -> None:
    from kernels.binding import configure

    lib = configure(ctypes.CDLL(str(built.path)))
    # Argument errors come back as cudaErrorInvalidValue (1) before any CUDA call.
    rc = lib.pd_paged_decode(
        1,
        None,
        None,
        None,
        None,
        None,
        1,
        1,
        8,
        8,
        128,
        16,
        4,
        1,
        1,
        1.0,
        1.0,
        1.0,
        64,
        1,
        0,
        0,
        None,
        0,
        None,
    )
    assert rc == 1 and lib.pd_error_string(rc)
    assert lib.pd_workspace_bytes(2, 4, 8, 128, 1) == 0
    assert lib.pd_workspace_bytes(2, 4, 8, 128, 3) == 3 * 2 * 4 * 8 * 129 * 4
    threads, smem = ctypes.c_int(), ctypes.c_int()
    for tile in TILES:
        for d in (64, 128, 256):
            for code, kv in ((1, "bf16"), (2, "fp8")):
                assert (
                    lib.pd_grouped_config(tile, d, code, ctypes.byref(threads), ctypes.byref(smem))
                    == 0
                )
                mirror = kernel_shape(tile, d, kv)  # the cost model's copy of GCfg
                assert (threads.value, smem.value) == (mirror.threads, mirror.smem_bytes)


@needs_nvcc
def test_broken_source_raises_build_error(tmp_path: Path) -> None:
    src = tmp_path / "csrc"
    src.mkdir()
    (src / "broken.cu").write_text("__global__ void k() { this_is_not_cuda; }\n")
    with pytest.raises(kb.BuildError) as exc:
        kb.build(archs=("90a",), cache_dir=tmp_path / "cache", csrc=src)
    assert "this_is_not_cuda" in str(exc.value) and "error" in str(exc.value)


def test_defines_and_archs_change_the_key(tmp_path: Path) -> None:
    base = kb.build_key(kb.CSRC, "v1", ("90a",), ())
    assert kb.build_key(kb.CSRC, "v1", ("90a",), ("PD_SLOW=1",)) != base
    assert kb.build_key(kb.CSRC, "v1", ("80", "90a"), ()) != base
    assert kb.build_key(kb.CSRC, "v2", ("90a",), ()) != base
    copy = tmp_path / "csrc"
    shutil.copytree(kb.CSRC, copy)
    assert kb.build_key(copy, "v1", ("90a",), ()) == base
    (copy / "api.cu").write_text((copy / "api.cu").read_text() + "\n// edit\n")
    assert kb.build_key(copy, "v1", ("90a",), ()) != base


def test_archs_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CUDA_ARCHS", "sm_90a, 100a")
    assert kb.default_archs() == ("90a", "100a")
    monkeypatch.delenv("HARNESS_CUDA_ARCHS")
    assert kb.default_archs() == kb.DEFAULT_ARCHS
    assert kb.gencode_flags(("90a",)) == ["-gencode=arch=compute_90a,code=sm_90a"]
    with pytest.raises(kb.BuildError, match="bad CUDA arch"):
        kb.gencode_flags(("sm90",))


def test_missing_nvcc_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(kb.Path, "is_file", lambda self: False)
    with pytest.raises(kb.BuildError, match="nvcc not found"):
        kb.find_nvcc()


def test_import_needs_no_gpu() -> None:
    import kernels

    assert callable(kernels.paged_decode) and callable(kernels.plan)
    assert isinstance(kernels.cuda_available(), bool)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"k_scale": 0.0}, "k_scale must be a positive finite number, got 0.0"),
        ({"k_scale": -1.0}, "k_scale must be a positive finite number"),
        ({"v_scale": float("inf")}, "v_scale must be a positive finite number"),
        ({"v_scale": "x"}, "v_scale must be a positive finite number, got 'x'"),
    ],
)
def test_bad_dequant_scales_are_rejected_before_any_launch(kw: dict, msg: str) -> None:
    """The kernels fold k_scale into the softmax scale and rely on its sign."""
    import torch

    import kernels

    q = torch.zeros(2, 8, 128, dtype=torch.bfloat16)
    kv = torch.zeros(4, 2, 16, 1, 128, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=msg):
        kernels.paged_decode(
            q,
            kv,
            torch.zeros(1, 4, dtype=torch.int32),
            torch.full((1,), 2, dtype=torch.int32),
            q_len=2,
            **kw,
        )


@pytest.mark.parametrize("name", ["q", "kv_cache", "out"])
def test_misaligned_tensors_are_refused_before_any_launch(name: str) -> None:
    """A view that starts 2 bytes into its storage would fault the 16-byte copies and
    poison the CUDA context for every later case: refused with one message naming it."""
    import torch

    import kernels

    def offset_view(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        n = 1
        for s in shape:
            n *= s
        return torch.zeros(n + 8, dtype=dtype)[1 : n + 1].view(shape)

    args = {
        "q": torch.zeros(2, 8, 128, dtype=torch.bfloat16),
        "kv_cache": torch.zeros(4, 2, 16, 1, 128, dtype=torch.bfloat16),
        "out": torch.zeros(2, 8, 128, dtype=torch.bfloat16),
    }
    args[name] = offset_view(tuple(args[name].shape), torch.bfloat16)
    assert args[name].data_ptr() % 16 == 2
    with pytest.raises(
        ValueError, match=rf"^{name} must start at a 16-byte aligned address, not 0x"
    ):
        kernels.paged_decode(
            args["q"],
            args["kv_cache"],
            torch.zeros(1, 4, dtype=torch.int32),
            torch.full((1,), 2, dtype=torch.int32),
            q_len=2,
            out=args["out"],
        )


def test_int32_views_need_no_16_byte_alignment() -> None:
    """page_table and kv_lens are read as int32: a slice 4 bytes into its storage is fine
    (on a CPU machine the call then stops at the device check, not at alignment)."""
    import torch

    import kernels

    lens = torch.full((9,), 2, dtype=torch.int32)[1:]
    assert lens.data_ptr() % 16 == 4
    with pytest.raises(ValueError, match=r"^q must be a CUDA tensor"):
        kernels.paged_decode(
            torch.zeros(16, 8, 128, dtype=torch.bfloat16),
            torch.zeros(4, 2, 16, 1, 128, dtype=torch.bfloat16),
            torch.zeros(8, 4, dtype=torch.int32),
            lens,
            q_len=2,
        )


@needs_nvcc
def test_c_abi_rejects_misaligned_pointers(built: kb.BuildResult) -> None:
    """The C ABI refuses a q, cache or out pointer off 16 bytes before any CUDA call."""
    from kernels.binding import configure

    lib = configure(ctypes.CDLL(str(built.path)))
    good, bad = ctypes.c_void_p(256), ctypes.c_void_p(264)  # never dereferenced
    tail = [1, 1, 8, 1, 128, 16, 4, 1, 1, 1.0, 1.0, 1.0, 16, 1, 0, 0, None, 0, None]
    for which in range(3):  # q, kv_cache, out
        ptrs = [good] * 5
        ptrs[(0, 1, 4)[which]] = bad
        assert lib.pd_paged_decode(1, *ptrs, *tail) == 1, which


@needs_nvcc
def test_c_abi_rejects_pages_over_2_gib(built: kb.BuildResult) -> None:
    """The kernels address within a KV page in 32 bits: a page of 2 x 64 tokens x 32768
    heads x 256 x 2 bytes (2 GiB) is refused before any CUDA call."""
    from kernels.binding import configure

    lib = configure(ctypes.CDLL(str(built.path)))
    p = ctypes.c_void_p(16)  # never dereferenced: the call returns first
    args = [1, p, p, p, p, p, 1, 1, 32768, 32768, 256, 64, 1, 1, 1, 1.0, 1.0, 1.0, 16, 1, 0, 0]
    assert lib.pd_paged_decode(*args, None, 0, None) == 1


@needs_nvcc
def test_c_abi_checks_a_balanced_grid(built: kb.BuildResult) -> None:
    """A balanced grid whose CTAs miss some of the work, include idle ones, or split an item
    over more CTAs than it has partial slots is refused before any CUDA call (it would
    leave outputs unwritten or write past the workspace); kernels.plan's shape for the
    same problem gets past those checks to the launch. pd_grouped_balanced reports which
    kernels run one: with no GPU, the mma.sync kernel, which does."""
    from kernels.binding import configure
    from kernels.plan import balanced_shape

    lib = configure(ctypes.CDLL(str(built.path)))
    p = ctypes.c_void_p(256)  # never dereferenced by a refused call
    # GPT-OSS fp8 q_len 2 batch 40: 40 items per KV head of 4 stages (256 tokens, page 16, 16
    # pages), the 8 heads cut alike over 528 / 8 CTAs each
    per_head, units, slots = balanced_shape(40, 4, 528 // 8)  # type: ignore[misc]
    head = [1, p, p, p, p, p, 40, 2, 64, 8, 64, 16, 16, 1, 2, 0.125, 1.0, 1.0, 16]
    ws = lib.pd_workspace_bytes(40, 2, 64, 64, slots + 1)
    buf = ctypes.create_string_buffer(ws + 256)
    wsp = ctypes.c_void_p((ctypes.addressof(buf) + 255) // 256 * 256)

    def call(n_ctas: int, n_units: int, n_slots: int) -> int:
        return lib.pd_paged_decode(*head, n_slots, n_units * 64, n_ctas, wsp, ws, None)

    assert call(8 * (per_head - 1), units, slots) == 1  # a head's last stages uncovered
    assert call(8 * (per_head + 1), units, slots) == 1  # a CTA with nothing to do
    assert call(8 * per_head + 1, units, slots) == 1  # the heads not cut alike
    assert call(8 * per_head, units, slots - 1) == 1  # too few partial slots
    assert call(8 * 32, 5, slots) == 1  # a CTA longer than an item could meet three
    # The classic grid's y (row tiles x splits) holds at most 65535: 65536 splits are refused
    # though the (never touched) workspace is claimed big enough for them.
    split_ws = lib.pd_workspace_bytes(40, 2, 64, 64, 65536)
    assert lib.pd_paged_decode(*head, 65536, 64, 0, p, split_ws, None) == 1
    if _no_gpu():  # past the checks: the launch fails for want of a device
        assert call(8 * per_head, units, slots) not in (0, 1)
        assert lib.pd_paged_decode(*head, 65535, 64, 0, p, split_ws, None) not in (0, 1)
    ok = ctypes.c_int(-1)
    assert lib.pd_grouped_balanced(16, 64, 1, 2, 16, ctypes.byref(ok)) == 0 and ok.value == 1
    assert lib.pd_grouped_balanced(16, 64, 1, 2, 0, ctypes.byref(ok)) == 1  # rows
    assert lib.pd_grouped_balanced(16, 96, 1, 2, 16, ctypes.byref(ok)) == 1  # head_dim


@needs_nvcc
def test_occupancy_of_the_dispatched_kernel_checks_its_arguments(built: kb.BuildResult) -> None:
    """pd_grouped_occupancy_for (what kernels.device_plan plans with) refuses a row count
    below 1 or a missing output before asking CUDA anything."""
    from kernels.binding import configure

    lib = configure(ctypes.CDLL(str(built.path)))
    out = ctypes.c_int(0)
    assert lib.pd_grouped_occupancy_for(64, 64, 1, 2, 0, ctypes.byref(out)) == 1
    assert lib.pd_grouped_occupancy_for(64, 64, 1, 2, 64, None) == 1
    assert lib.pd_grouped_occupancy_for(64, 96, 1, 2, 64, ctypes.byref(out)) == 1  # head_dim
