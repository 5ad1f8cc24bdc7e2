"""Device discovery, pinning, copy-bandwidth ceiling and the environment fingerprint.

Every result row carries `environment()`, so a report can always say which machine,
driver, toolkit and commit a number came from.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DeviceInfo:
    """What a report needs to say about the device a number was measured on."""

    kind: str  # "cuda" or "cpu"
    name: str
    index: int
    uuid: str
    sm_count: int
    l2_bytes: int
    memory_bytes: int
    capability: str
    visible_devices: str

    def to_dict(self) -> dict:
        return asdict(self)


def cuda_usable() -> bool:
    """True when torch has CUDA and sees at least one GPU."""
    try:
        return torch.cuda.is_available() and torch.cuda.device_count() > 0
    except Exception:  # a broken driver install must read as "no GPU", not a traceback
        return False


def select_device() -> torch.device:
    return torch.device("cuda", 0) if cuda_usable() else torch.device("cpu")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> DeviceInfo:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return DeviceInfo(
            kind="cuda",
            name=p.name,
            index=device.index or 0,
            uuid=str(getattr(p, "uuid", "")),
            sm_count=p.multi_processor_count,
            l2_bytes=int(getattr(p, "L2_cache_size", 0)),
            memory_bytes=p.total_memory,
            capability=f"{p.major}.{p.minor}",
            visible_devices=visible,
        )
    return DeviceInfo(
        kind="cpu",
        name=_cpu_name(),
        index=0,
        uuid="",
        sm_count=os.cpu_count() or 1,
        l2_bytes=0,
        memory_bytes=0,
        capability="",
        visible_devices=visible,
    )


@functools.cache
def copy_bandwidth_tbps(device_str: str) -> float:
    """Measured device-to-device copy rate, bytes read + written, in TB/s: the ceiling a
    memory-bound decode kernel is judged against."""
    from harness.timing import TimingConfig, time_fn

    device = torch.device(device_str)
    nbytes = 1 << 30 if device.type == "cuda" else 1 << 27
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    cfg = TimingConfig(warmup_ms=20, budget_ms=200, min_reps=10, max_reps=200, flush_l2=False)
    stats = time_fn(lambda: dst.copy_(src), device, cfg)
    return 2 * nbytes / (stats.median_ms * 1e-3) / 1e12


def gpu_count_without_cuda_init() -> int:
    """How many GPUs this process may use, without initialising CUDA (so that a worker
    can still pin itself with CUDA_VISIBLE_DEVICES afterwards)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


_slot_lock = None  # held for the life of the worker: the OS releases it when we die


def _visible_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    return [str(i) for i in range(gpu_count_without_cuda_init())]


def pin_worker_gpu(worker_index: int, lock_dir: Path | None = None) -> str | None:
    """Restrict this process to one GPU, before CUDA is initialised.

    Indexes into the caller's own CUDA_VISIBLE_DEVICES list when set (given "2,3",
    gw0 gets "2" and gw1 gets "3"), otherwise into physical ids 0..n-1. With
    `lock_dir`, each GPU is claimed with an exclusive file lock, trying the worker's
    own slot first: a worker that xdist starts to replace a crashed one (it gets a new
    gwN) takes the GPU the dead worker held, not one that is busy. Returns the chosen
    id, or None when there is no GPU.
    """
    global _slot_lock
    ids = _visible_ids()
    if not ids:
        return None
    order = [ids[(worker_index + k) % len(ids)] for k in range(len(ids))]
    chosen = order[0]
    if lock_dir is not None:
        import fcntl

        lock_dir.mkdir(parents=True, exist_ok=True)
        for gid in order:
            fh = open(lock_dir / f"gpu-{gid}.lock", "w")  # noqa: SIM115 - held until exit
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                continue
            _slot_lock, chosen = fh, gid
            break
    os.environ["CUDA_VISIBLE_DEVICES"] = chosen
    return chosen


def nvml_snapshot(device: torch.device) -> dict | None:
    """SM/memory clocks, temperature, power and throttle reasons, if NVML is readable."""
    if device.type != "cuda":
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        handle = None
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            u = pynvml.nvmlDeviceGetUUID(h)
            u = u.decode() if isinstance(u, bytes) else u
            if u.removeprefix("GPU-") == uuid.removeprefix("GPU-"):
                handle = h
                break
        if handle is None:
            return None
        snap = {
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "throttle_reasons": int(pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle)),
        }
    except Exception:  # NVML absent or refused: a report says "clocks unknown" instead
        return None
    snap.update(_violation_counters(pynvml, handle))
    return snap


def _violation_counters(pynvml: ModuleType, handle: object) -> dict[str, int]:
    """NVML's running totals of the time (ns) the power or thermal policy held the clocks
    below what was asked for. Why: the reason bits are only what holds at the moment of
    reading, and a power cap that bites inside a 10 ms batch can be gone when the batch
    ends (H100, Qwen3 fp8 q_len 8 batch 64: all three batches of one harness timing ran
    70 ms under the power policy while every reading before and after showed no reason bit,
    kernels/NOTES.md, twenty-ninth session); a counter that moved between two readings says
    so. Missing where NVML refuses them."""
    out = {}
    for key, policy in (
        ("power_violation_ns", "NVML_PERF_POLICY_POWER"),
        ("thermal_violation_ns", "NVML_PERF_POLICY_THERMAL"),
    ):
        try:
            out[key] = int(
                pynvml.nvmlDeviceGetViolationStatus(handle, getattr(pynvml, policy)).violationTime
            )
        except Exception:  # not supported on this GPU or driver: the reason bits alone
            continue
    return out


@functools.cache
def git_commit() -> str:
    env = (
        os.environ.get("HARNESS_COMMIT")
        or os.environ.get("CI_COMMIT_SHA")
        or os.environ.get("GITHUB_SHA")
        or os.environ.get("GIT_COMMIT")
    )
    if env:
        return env
    try:
        # safe.directory: CI checkouts and containers often belong to another user
        out = subprocess.run(
            ["git", "-c", "safe.directory=*", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-c", "safe.directory=*", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _driver_version() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.splitlines()[0].strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def kernel_build_info() -> dict:
    """The loaded kernel library's build key, if the kernels were built in this process."""
    try:
        import kernels

        return dict(kernels.library_info(build=False) or {})
    except Exception:
        return {}


@functools.cache
def _static_environment(device_str: str) -> dict:
    device = torch.device(device_str)
    info = describe_device(device)
    return {
        "device": info.to_dict(),
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "driver": _driver_version() if device.type == "cuda" else "",
        "git_commit": git_commit(),
        "copy_tbps": round(copy_bandwidth_tbps(device_str), 4),
    }


def environment(device: torch.device) -> dict:
    """The fingerprint stored with every result row."""
    env = dict(_static_environment(str(device)))
    env["kernels"] = kernel_build_info()
    return env
