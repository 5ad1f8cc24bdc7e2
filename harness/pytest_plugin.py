"""pytest plugin: matrix files become test items, one per case x backend.

Each item checks its backend against the reference (output poisoned with NaN first),
times it, and appends one result row as soon as it ends, whatever the outcome. Under
pytest-xdist every worker pins one GPU before CUDA is initialised, and all backends of
a case run on the same worker (`xdist_group`), so inputs and reference are built once.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.matrix import Case, MatrixError, Settings, load_matrix

RESULTS_DIR_DEFAULT = "reports/results"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("decode-attn", "decode-attention regression harness")
    g.addoption(
        "--results-dir",
        default=RESULTS_DIR_DEFAULT,
        help="where each worker appends its JSON-lines results (default: %(default)s)",
    )
    g.addoption(
        "--backends", default="", help="comma-separated backends to run (default: all registered)"
    )
    g.addoption("--no-timing", action="store_true", help="check correctness only")
    g.addoption(
        "--timing-budget-ms",
        type=float,
        default=None,
        help="timing budget per case x backend (overrides the matrix setting)",
    )
    g.addoption(
        "--harness-device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="run on the GPU when there is one (auto), or force cpu / cuda",
    )
    g.addoption("--run-id", default=None, help="id shared by all result files of this run")


def _worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): run items of a group on one worker")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "harness_run_id" in workerinput:
        config.option.run_id = workerinput["harness_run_id"]
    if not config.option.run_id:
        config.option.run_id = (
            os.environ.get("HARNESS_RUN_ID")
            or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        )
    # Pin the GPU before anything initialises CUDA in this worker.
    if worker and config.option.harness_device != "cpu":
        from harness.gpu import pin_worker_gpu

        pin_worker_gpu(int(worker.removeprefix("gw") or 0))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand every worker the same run id."""
    node.workerinput["harness_run_id"] = node.config.option.run_id


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".toml" and (
        file_path.parent.name == "matrices" or _given_on_command_line(file_path, parent.config)
    ):
        return MatrixFile.from_parent(parent, path=file_path)
    return None


def _given_on_command_line(path: Path, config: pytest.Config) -> bool:
    for arg in config.args:
        candidate = Path(arg.split("::", 1)[0])
        if not candidate.is_absolute():
            candidate = Path(config.invocation_params.dir) / candidate
        if candidate.resolve() == path.resolve():
            return True
    return False


class MatrixFile(pytest.File):
    """One matrix file: its cases x the selected backends, in a fixed order."""

    def collect(self) -> Iterator[pytest.Item]:
        from harness.backends import all_backends, get

        matrix = load_matrix(self.path)
        wanted = [b for b in self.config.option.backends.split(",") if b.strip()]
        backends = [get(b.strip()) for b in wanted] if wanted else all_backends()
        for case in matrix.cases:
            for backend in backends:
                item = MatrixItem.from_parent(
                    self,
                    name=f"{case.id}[{backend.name}]",
                    case=case,
                    backend_name=backend.name,
                    settings=matrix.settings,
                    matrix_name=matrix.name,
                )
                item.add_marker(pytest.mark.xdist_group(case.id))
                yield item

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, (MatrixError, KeyError)):
            return str(excinfo.value).strip("'\"")
        return super().repr_failure(excinfo)


class CaseFailure(Exception):
    """A kernel computed the wrong answer; the message carries the error figures."""


@dataclass
class _Cached:
    key: tuple[str, str]
    inputs: Any
    reference: Any = None


_cache: _Cached | None = None
_writer = None


def _inputs_and_reference(case: Case, device: Any) -> tuple[Any, Any]:
    """Inputs and reference for `case`, built once per case in this process."""
    global _cache
    from harness.inputs import make_inputs
    from harness.reference import reference_attention

    key = (case.id, str(device))
    if _cache is None or _cache.key != key:
        _cache = None  # free the previous case's tensors before allocating new ones
        _cache = _Cached(key, make_inputs(case, device))
    if _cache.reference is None:
        _cache.reference = reference_attention(_cache.inputs)
    return _cache.inputs, _cache.reference


def _device(config: pytest.Config) -> Any:
    import torch

    from harness.gpu import select_device

    choice = config.option.harness_device
    if choice == "cpu":
        return torch.device("cpu")
    device = select_device()
    if choice == "cuda" and device.type != "cuda":
        raise pytest.UsageError("--harness-device cuda given, but no CUDA device is visible")
    return device


def tolerances(case: Case) -> tuple[float, float]:
    """(rtol, atol), FlashInfer-style: 1e-2 for 16-bit, doubled for q_len > 1, fp8 wider."""
    tol = 1e-2
    if case.q_len > 1:
        tol *= 2
    if case.kv_dtype == "fp8_e4m3":
        tol *= 2
    return tol, tol


MISMATCH_FRACTION = 5e-5


def check_output(out: Any, ref: Any, case: Case) -> dict[str, Any]:
    """Compare out with the reference; NaN (an unwritten element) always mismatches."""
    import torch

    rtol, atol = tolerances(case)
    o = out.float()
    r = ref.float()
    diff = (o - r).abs()
    ok = diff <= atol + rtol * r.abs()
    numel = o.numel()
    nan_count = int(torch.isnan(o).sum())
    finite = diff[torch.isfinite(diff)]
    return {
        "max_abs_err": float(finite.max()) if finite.numel() else float("inf"),
        "mismatches": int(numel - int(ok.sum())),
        "allowed_mismatches": int(MISMATCH_FRACTION * numel),
        "nan_count": nan_count,
        "numel": numel,
        "rtol": rtol,
        "atol": atol,
    }


def _failure_text(corr: dict[str, Any]) -> str:
    return (
        f"{corr['mismatches']} of {corr['numel']} elements outside rtol={corr['rtol']:g} "
        f"atol={corr['atol']:g} (allowed {corr['allowed_mismatches']}); max abs err "
        f"{corr['max_abs_err']:.4g}; {corr['nan_count']} NaN (unwritten or invalid)"
    )


class MatrixItem(pytest.Item):
    def __init__(
        self, *, case: Case, backend_name: str, settings: Settings, matrix_name: str, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.case = case
        self.backend_name = backend_name
        self.settings = settings
        self.matrix_name = matrix_name

    def _write(self, device: Any, status: str, started: float, **fields: Any) -> None:
        global _writer
        from harness.gpu import environment
        from harness.results import ResultRow, ResultWriter

        opt = self.config.option
        if _writer is None:
            _writer = ResultWriter(Path(opt.results_dir) / f"{opt.run_id}-{_worker_id()}.jsonl")
        env = environment(device)
        from harness.backends import get

        _writer.write(
            ResultRow(
                run_id=opt.run_id,
                matrix=self.matrix_name,
                case_id=self.case.id,
                case=self.case.axes(),
                backend=self.backend_name,
                role=get(self.backend_name).role,
                status=status,
                device=env["device"],
                env=env,
                worker=_worker_id(),
                timestamp=time.time(),
                duration_s=time.perf_counter() - started,
                **fields,
            )
        )

    def runtest(self) -> None:
        from harness.backends import get

        started = time.perf_counter()
        device = _device(self.config)
        backend = get(self.backend_name)
        reason = backend.supports(self.case, device)
        if reason:
            self._write(device, "skipped", started, message=reason)
            pytest.skip(reason)
        try:
            self._check_and_time(device, backend, started)
        except (CaseFailure, pytest.skip.Exception):
            raise
        except Exception as exc:
            self._write(device, "error", started, message=f"{type(exc).__name__}: {exc}")
            raise

    def _check_and_time(self, device: Any, backend: Any, started: float) -> None:
        import torch

        from harness.timing import TimingConfig, time_fn

        inputs, ref = _inputs_and_reference(self.case, device)
        launch = backend.prepare(inputs)
        plan = backend.describe(inputs)
        out = torch.empty_like(inputs.q).fill_(float("nan"))
        launch(out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        corr = check_output(out, ref, self.case)
        if corr["mismatches"] > corr["allowed_mismatches"]:
            msg = _failure_text(corr)
            self._write(device, "failed", started, message=msg, correctness=corr, plan=plan)
            raise CaseFailure(msg)
        opt = self.config.option
        timing: dict[str, Any] = {}
        tbps = None
        if self.settings.timing and not opt.no_timing:
            s = self.settings
            cfg = TimingConfig(
                warmup_ms=s.warmup_ms,
                budget_ms=opt.timing_budget_ms or s.budget_ms,
                min_reps=s.min_reps,
                max_reps=s.max_reps,
            )
            stats = time_fn(lambda: launch(out), device, cfg)
            timing = stats.to_dict()
            tbps = inputs.io_bytes() / (stats.median_ms * 1e-3) / 1e12
        self._write(
            device,
            "passed",
            started,
            correctness=corr,
            timing=timing,
            bytes=inputs.io_bytes(),
            tbps=tbps,
            plan=plan,
        )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, CaseFailure):
            return f"{self.case.id} [{self.backend_name}]: wrong output: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.case.id} [{self.backend_name}]"
