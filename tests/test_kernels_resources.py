"""ptxas's per-kernel report: the parser on real ptxas text, and the guard that the sm_90a
wgmma and warp-specialized kernels neither spill nor outgrow their launch register limit."""

from __future__ import annotations

import pytest

from kernels import build as kb
from kernels import resources as kr

try:
    kb.find_nvcc()
    HAVE_NVCC = True
except kb.BuildError:
    HAVE_NVCC = False

PTXAS = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN2pd17grouped_ws_kernelILi128E6__halfLb0EEEvNS_6ParamsE' for 'sm_90a'
ptxas info    : Function properties for _ZN2pd17grouped_ws_kernelILi128E6__halfLb0EEEvNS_6ParamsE
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 168 registers, used 16 barriers
ptxas info    : Compiling entry function '_ZN2pd14grouped_kernelILi256E6__halfLb0ELi8EEEvNS_6ParamsE' for 'sm_90a'
ptxas info    : Function properties for _ZN2pd14grouped_kernelILi256E6__halfLb0ELi8EEEvNS_6ParamsE
    32 bytes stack frame, 28 bytes spill stores, 32 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 32 bytes cumulative stack size
"""


def test_parse_ptxas_reads_registers_stack_and_spills() -> None:
    ws, mma = kr.parse_ptxas(PTXAS)
    assert ws == kr.KernelResources(
        "_ZN2pd17grouped_ws_kernelILi128E6__halfLb0EEEvNS_6ParamsE", "sm_90a", 168, 0, 0, 0
    )
    assert not ws.spills
    assert (mma.registers, mma.stack_bytes, mma.spill_store_bytes, mma.spill_load_bytes) == (
        255,
        32,
        28,
        32,
    )
    assert mma.spills


def test_parse_ptxas_ignores_text_without_entries() -> None:
    assert kr.parse_ptxas("ptxas info    : 0 bytes gmem\n") == []


@pytest.mark.skipif(not HAVE_NVCC, reason="nvcc not found")
def test_hopper_tensor_core_kernels_do_not_spill() -> None:
    units = [kb.CSRC / "grouped_d64.cu", kb.CSRC / "grouped_d128.cu"]
    kernels = [
        k
        for k in kr.resource_usage("90a", units)
        if "grouped_w" in k.name or "grouped_sw" in k.name
    ]
    names = {k.name for k in kernels}
    assert any("grouped_ws_kernel" in n for n in names)
    # the swapped-operand fp8 kernel's two forms: 96 rows (two consumer warpgroups), 48 (one)
    assert any("grouped_sw_kernelILi128ELi96E" in n for n in names)
    assert any("grouped_sw_kernelILi128ELi48E" in n for n in names)
    assert any("grouped_wg16_kernel" in n for n in names)
    assert any("grouped_wg_kernel" in n for n in names)

    # grouped_wg_kernel's balanced-grid instantiation (SK, "Lb1EE" after NWG) at 128
    # registers keeps a few values of its segment loop in local memory: allowed up to 32
    # bytes (cuobjdump, nineteenth session: 20 bytes stored in the segment's prologue, one
    # load after the stage loop, none inside it). Every other kernel: none.
    def allowed(name: str) -> int:
        return 32 if "grouped_wg_kernel" in name and "Lb1EE" in name else 0

    assert any(allowed(k.name) for k in kernels)
    spilled = [
        (k.name, k.spill_store_bytes, k.spill_load_bytes)
        for k in kernels
        if max(k.spill_store_bytes, k.spill_load_bytes) > allowed(k.name)
    ]
    assert spilled == []
    for k in kernels:
        if "grouped_ws_kernel" in k.name:
            # 384 threads (bf16) or 512 (fp8) at launch: 168 or 128 registers at most
            assert k.registers <= (128 if "Lb1E" in k.name else 168), k
        if "grouped_sw_kernel" in k.name:
            # 384 threads, one CTA per SM (96 rows); 256 threads, two CTAs per SM (48 rows)
            assert k.registers <= (168 if "Li96E" in k.name else 128), k


def test_cli_rejects_an_unknown_unit(capsys: pytest.CaptureFixture[str]) -> None:
    assert kr.main(["--units", "nope.cu"]) == 2
    assert "no such kernel source: nope.cu" in capsys.readouterr().err
