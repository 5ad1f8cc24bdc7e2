"""pytest plugin: matrix files become test items.

Per case, one item per backend (`CASEID[backend]`: check against the reference with the
output poisoned with NaN, then time) and one per requested A/B pair
(`CASEID[A-vs-B]`: both checked, then timed interleaved in one process with a verdict).
Every item appends one result row as soon as it ends, whatever the outcome. Under
pytest-xdist each worker pins one GPU before CUDA is initialised; a per-process cache
builds each case's inputs and reference once per process (items also carry an
`xdist_group` marker for callers who choose `--dist loadgroup`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.checks import check_output, failure_text, passed
from harness.faults_handling import (
    EXIT_CUDA_FAULT,
    EXIT_TIMEOUT,
    cuda_context_broken,
    free_device_memory,
    out_of_memory,
)
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
    g.addoption(
        "--ab",
        action="append",
        default=[],
        metavar="A:B",
        help="time backend B against backend A interleaved in one process (repeatable)",
    )
    g.addoption("--no-timing", action="store_true", help="check correctness only")
    g.addoption(
        "--timing-budget-ms",
        type=float,
        default=None,
        help="timing budget per item (overrides the matrix setting)",
    )
    g.addoption(
        "--threshold", type=float, default=None, help="A/B verdict threshold (e.g. 0.01 = 1 %%)"
    )
    g.addoption("--use-graphs", action="store_true", help="time CUDA-graph replays")
    g.addoption("--warm-l2", action="store_true", help="do not flush L2 between launches")
    g.addoption(
        "--baseline-kernels",
        default=None,
        help="a kernels/ package built from another revision: adds cuda_*@base backends",
    )
    g.addoption(
        "--case-timeout",
        type=float,
        default=None,
        help="seconds before a hung item is recorded as a timeout and its worker replaced "
        "(default: the matrix's timeout_s, 300)",
    )
    g.addoption(
        "--resume",
        action="store_true",
        help="skip items that already have a result in this run (--run-id): how the CLI "
        "goes on after a crashed single-process run",
    )
    g.addoption(
        "--inject-faults",
        default="",
        metavar="KIND@CASE,...",
        help="TEST ONLY: add the fault_injector backend planting crash/hang/oom in cases",
    )
    g.addoption(
        "--planted-kernels",
        default=None,
        help="TEST ONLY: a kernels/ copy built with a planted slowdown: adds cuda_*@planted",
    )
    g.addoption(
        "--harness-device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="run on the GPU when there is one (auto), or force cpu / cuda",
    )
    g.addoption("--run-id", default=None, help="id shared by all result files of this run")


def _worker_id(config: pytest.Config) -> str:
    """This process's xdist worker id, or "main". Read from xdist's own workerinput, not
    the PYTEST_XDIST_WORKER variable, which a run started from inside another xdist
    worker (a test of the harness, a CI wrapper) inherits."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "main"


def _is_worker(config: pytest.Config) -> bool:
    return getattr(config, "workerinput", None) is not None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): run items of a group on one worker")
    worker = _worker_id(config) if _is_worker(config) else None
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

        locks = Path(config.option.results_dir) / f".gpu-locks-{config.option.run_id}"
        pin_worker_gpu(int(worker.removeprefix("gw") or 0), lock_dir=locks)
    if not worker:
        _sigterm_as_interrupt()
    if config.option.inject_faults:
        from harness.backends.faults import enable

        try:
            enable(config.option.inject_faults)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    from harness.backends.cuda_kernels import register_revision

    if config.option.baseline_kernels:
        register_revision(Path(config.option.baseline_kernels), suffix="@base")
    if config.option.planted_kernels:
        register_revision(Path(config.option.planted_kernels), suffix="@planted")


def _sigterm_as_interrupt() -> None:
    """CI cancels jobs with SIGTERM: turn it into Ctrl-C so pytest (and xdist) stop
    cleanly and the run is marked interrupted; rows already written stay."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        global _interrupted
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one interrupt; let shutdown finish
        _interrupted = True
        raise KeyboardInterrupt(f"signal {signum}")

    with contextlib.suppress(ValueError):  # not the main thread (embedded use)
        signal.signal(signal.SIGTERM, handler)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """--resume: drop the items this run already recorded (before a crash)."""
    if not config.option.resume:
        return
    from harness.results import run_rows

    rows = run_rows(Path(config.option.results_dir), config.option.run_id)
    done = {(r.case_id, r.backend) for r in rows}
    keep, drop = [], []
    for item in items:
        key = (getattr(item, "case", None) and item.case.id, getattr(item, "backend_name", ""))
        (drop if key in done else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def inflight_path(results_dir: Path, run_id: str) -> Path:
    """The item a single-process run is on; the CLI reads it when that process dies."""
    return results_dir / f"inflight-{run_id}.json"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Record the planned items once, so a report can tell a partial run from a full one."""
    from harness.results import write_manifest

    if session.items:
        opt = session.config.option
        write_manifest(Path(opt.results_dir), opt.run_id, [i.nodeid for i in session.items])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from harness.results import write_done

    if _is_worker(session.config):
        return
    opt = session.config.option
    if Path(opt.results_dir).exists():
        status = int(pytest.ExitCode.INTERRUPTED) if _interrupted else int(exitstatus)
        write_done(Path(opt.results_dir), opt.run_id, status)


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: Any, sched: Any) -> None:
    """xdist controller: a worker died mid-item (signal, hard exit, OOM kill)."""
    if not hasattr(report, "node"):
        return
    opt = report.node.config.option
    worker = getattr(getattr(report.node, "gateway", None), "id", "?")
    record_dead_item(
        Path(opt.results_dir),
        opt.run_id,
        crashitem,
        f"worker {worker}",
        "it was replaced and the run went on",
    )


def record_dead_item(results: Path, run_id: str, nodeid: str, who: str, then: str) -> bool:
    """Record the item a dead process was running as an error, unless that process
    managed to record it before dying. Returns True when a row was written."""
    from harness.results import ResultRow, ResultWriter, run_rows

    path, _, name = nodeid.partition("::")
    if "]" in name:  # xdist's loadgroup appends "@group" to node ids
        name = name[: name.rindex("]") + 1]
    case_id, _, backend = name.partition("[")
    backend = backend.rstrip("]")
    rows = run_rows(results, run_id)
    if any(r.case_id == case_id and r.backend == backend for r in rows):
        return False
    # The dead process cannot say where it ran; the run's other rows can (same GPU pool,
    # same fingerprint), so the report groups this error under the right device.
    seen = [r for r in rows if r.device]
    last = max(seen, key=lambda r: r.timestamp) if seen else None
    matrix, axes = _matrix_info(path, case_id)
    ResultWriter(results / f"{run_id}-controller.jsonl").write(
        ResultRow(
            run_id=run_id,
            matrix=matrix,
            case_id=case_id,
            case=axes,
            backend=backend,
            role="comparison" if "-vs-" in backend else _role(backend),
            status="error",
            message=f"{who} died while running this case (killed by a signal or exited "
            f"hard; a host out-of-memory kill looks like this too); {then}",
            worker="controller",
            timestamp=time.time(),
            device=dict(last.device) if last else {},
            env=dict(last.env) if last else {},
        )
    )
    return True


def _role(backend: str) -> str:
    from harness.backends import get

    try:
        return get(backend).role
    except KeyError:
        return "peer"


def _matrix_info(path: str, case_id: str) -> tuple[str, dict[str, Any]]:
    """(matrix name, case axes) for a node id's matrix file, as well as can be read."""
    try:
        matrix = load_matrix(path)
    except (MatrixError, OSError):
        return Path(path).stem, {}
    for case in matrix.cases:
        if case.id == case_id:
            return matrix.name, case.axes()
    return matrix.name, {}


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


def _ab_pairs(config: pytest.Config) -> list[tuple[str, str]]:
    pairs = []
    for spec in config.option.ab:
        a, sep, b = spec.partition(":")
        if not sep or not a.strip() or not b.strip():
            raise pytest.UsageError(f"--ab {spec!r}: expected BACKEND_A:BACKEND_B")
        pairs.append((a.strip(), b.strip()))
    return pairs


class MatrixFile(pytest.File):
    """One matrix file: its cases x (backends + A/B pairs), in a fixed order."""

    def collect(self) -> Iterator[pytest.Item]:
        from harness.backends import all_backends, get

        matrix = load_matrix(self.path)
        wanted = [b.strip() for b in self.config.option.backends.split(",") if b.strip()]
        backends = [get(b).name for b in wanted] if wanted else [b.name for b in all_backends()]
        pairs = _ab_pairs(self.config)
        for a, b in pairs:
            get(a), get(b)  # unknown names fail collection with the list of known ones
        common = {"settings": matrix.settings, "matrix_name": matrix.name}
        for case in matrix.cases:
            items: list[pytest.Item] = [
                BackendItem.from_parent(
                    self, name=f"{case.id}[{name}]", case=case, backend_name=name, **common
                )
                for name in backends
            ]
            items += [
                ABItem.from_parent(
                    self,
                    name=f"{case.id}[{a}-vs-{b}]",
                    case=case,
                    backend_name=f"{a}-vs-{b}",
                    pair=(a, b),
                    **common,
                )
                for a, b in pairs
            ]
            for item in items:
                item.add_marker(pytest.mark.xdist_group(case.id))
                yield item

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, (MatrixError, KeyError)):
            return str(excinfo.value).strip("'\"")
        return super().repr_failure(excinfo)


class CaseFailure(Exception):
    """A kernel computed the wrong answer, or an A/B verdict found a regression."""


@dataclass
class _Cached:
    key: tuple[Any, str]
    inputs: Any
    reference: Any = None


_cache: _Cached | None = None
_writer = None
_interrupted = False


def _inputs_and_reference(case: Case, device: Any) -> tuple[Any, Any]:
    """Inputs and reference for `case`, built once per case in this process."""
    global _cache
    from harness.inputs import make_inputs
    from harness.reference import reference_attention

    key = (case, str(device))
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


class HarnessItem(pytest.Item):
    """Shared plumbing: result rows, device, timing config, failure text."""

    def __init__(
        self, *, case: Case, backend_name: str, settings: Settings, matrix_name: str, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.case = case
        self.backend_name = backend_name
        self.settings = settings
        self.matrix_name = matrix_name

    role = "baseline"

    def _write(self, device: Any, status: str, started: float, **fields: Any) -> None:
        global _writer
        from harness.gpu import environment
        from harness.results import ResultRow, ResultWriter

        opt = self.config.option
        if _writer is None:
            _writer = ResultWriter(
                Path(opt.results_dir) / f"{opt.run_id}-{_worker_id(self.config)}.jsonl"
            )
        env = environment(device)
        _writer.write(
            ResultRow(
                run_id=opt.run_id,
                matrix=self.matrix_name,
                case_id=self.case.id,
                case=self.case.axes(),
                backend=self.backend_name,
                role=self.role,
                status=status,
                device=env["device"],
                env=env,
                worker=_worker_id(self.config),
                timestamp=time.time(),
                duration_s=time.perf_counter() - started,
                **fields,
            )
        )

    def timing_config(self, attempt: int = 0):
        from harness.timing import TimingConfig

        s, opt = self.settings, self.config.option
        return TimingConfig(
            warmup_ms=s.warmup_ms,
            budget_ms=(opt.timing_budget_ms or s.budget_ms) * (2**attempt),
            min_reps=s.min_reps,
            max_reps=s.max_reps * (2**attempt),
            target_rel_ci=s.target_rel_ci,
            flush_l2=s.flush_l2 and not opt.warm_l2,
            use_graphs=s.use_graphs or opt.use_graphs,
            seed=attempt,
        )

    def timing_enabled(self) -> bool:
        return self.settings.timing and not self.config.option.no_timing

    def runtest(self) -> None:
        started = time.perf_counter()
        device = _device(self.config)
        inflight = None
        if not _is_worker(self.config):  # under xdist the controller knows the item
            opt = self.config.option
            inflight = inflight_path(Path(opt.results_dir), opt.run_id)
            inflight.parent.mkdir(parents=True, exist_ok=True)
            inflight.write_text(self.nodeid)
        watchdog = self._watchdog(device, started)
        try:
            self.execute(device, started)
        except (CaseFailure, pytest.skip.Exception):
            raise
        except Exception as exc:
            self._handle_exception(exc, device, started)
        finally:
            watchdog.cancel()
            if inflight is not None:
                inflight.unlink(missing_ok=True)

    def case_timeout(self) -> float:
        given = self.config.option.case_timeout
        return self.settings.timeout_s if given is None else given

    def _watchdog(self, device: Any, started: float) -> threading.Timer:
        """A hung kernel never returns to Python, so a timer thread records the timeout
        and ends the worker; xdist starts a replacement and the run goes on."""
        limit = self.case_timeout()
        if limit <= 0:  # --case-timeout 0: no watchdog (debugging under a debugger)
            return threading.Timer(0, lambda: None)

        def fire() -> None:
            self._write(device, "error", started, message=f"timeout after {limit:g} s")
            os._exit(EXIT_TIMEOUT)

        timer = threading.Timer(limit, fire)
        timer.daemon = True
        timer.start()
        return timer

    def _handle_exception(self, exc: Exception, device: Any, started: float) -> None:
        global _cache
        oom = out_of_memory(exc)
        if oom is not None:
            _cache = None
            free_device_memory(device)
            self._write(device, "skipped", started, message=f"does not fit: {oom}")
            pytest.skip(f"does not fit: {oom}")
        msg = f"{type(exc).__name__}: {exc}"
        self._write(device, "error", started, message=msg)
        if device.type == "cuda" and cuda_context_broken(device):
            # The context is unusable for every later case: let xdist replace the worker.
            if _is_worker(self.config):
                os._exit(EXIT_CUDA_FAULT)
            pytest.exit(f"CUDA context lost in {self.nodeid}: {msg}", returncode=3)
        raise exc

    def execute(self, device: Any, started: float) -> None:
        raise NotImplementedError

    def skip_unsupported(self, device: Any, started: float, names: tuple[str, ...]) -> None:
        from harness.backends import get

        for name in names:
            reason = get(name).supports(self.case, device)
            if reason:
                self._write(device, "skipped", started, message=f"{name}: {reason}")
                pytest.skip(f"{name}: {reason}")

    def launch_checked(self, device: Any, started: float, name: str, inputs: Any, ref: Any):
        """Prepare `name`, launch once into a NaN-filled output, check it; returns
        (launcher, out, correctness, plan) or records the failure and raises."""
        import torch

        from harness.backends import get

        backend = get(name)
        launch = backend.prepare(inputs)
        plan = backend.describe(inputs)
        out = torch.empty_like(inputs.q).fill_(float("nan"))
        launch(out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        corr = check_output(out, ref, self.case)
        if not passed(corr):
            msg = f"{name}: {failure_text(corr)}"
            self._write(device, "failed", started, message=msg, correctness=corr, plan=plan)
            raise CaseFailure(msg)
        return launch, out, corr, plan

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, CaseFailure):
            return f"{self.case.id} [{self.backend_name}]: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.case.id} [{self.backend_name}]"


class BackendItem(HarnessItem):
    """One backend on one case: correctness, then timing."""

    @property
    def role(self) -> str:  # type: ignore[override]
        from harness.backends import get

        return get(self.backend_name).role

    def execute(self, device: Any, started: float) -> None:
        from harness.timing import time_fn

        self.skip_unsupported(device, started, (self.backend_name,))
        inputs, ref = _inputs_and_reference(self.case, device)
        launch, out, corr, plan = self.launch_checked(
            device, started, self.backend_name, inputs, ref
        )
        timing: dict[str, Any] = {}
        tbps = None
        if self.timing_enabled():
            stats = time_fn(lambda: launch(out), device, self.timing_config())
            timing = stats.to_dict()
            if stats.usable:
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


class ABItem(HarnessItem):
    """B against A on one case, interleaved in one process; `slower` is a failure."""

    role = "comparison"

    def __init__(self, *, pair: tuple[str, str], **kw: Any) -> None:
        super().__init__(**kw)
        self.pair = pair

    def execute(self, device: Any, started: float) -> None:
        from harness.stats import verdict
        from harness.timing import time_ab

        a, b = self.pair
        self.skip_unsupported(device, started, self.pair)
        inputs, ref = _inputs_and_reference(self.case, device)
        la, _, _, _ = self.launch_checked(device, started, a, inputs, ref)
        lb, out, corr, plan = self.launch_checked(device, started, b, inputs, ref)
        if not self.timing_enabled():
            self._write(device, "passed", started, correctness=corr, plan=plan)
            return
        threshold = self.config.option.threshold or self.case.threshold or self.settings.threshold
        attempts = []
        for attempt in range(self.settings.max_reruns + 1):
            # Both sides write the same buffer: an A/A on the H100 showed a systematic 5 %
            # difference between two output buffers at different addresses.
            pt = time_ab(lambda: la(out), lambda: lb(out), device, self.timing_config(attempt))
            v = verdict(pt.ratio, threshold)
            attempts.append(
                {
                    "ratio": pt.ratio.ratio,
                    "ci_low": pt.ratio.ci_low,
                    "ci_high": pt.ratio.ci_high,
                    "verdict": v,
                    "n": pt.ratio.n_a,
                }
            )
            if v != "inconclusive":
                break
        r = pt.ratio
        comparison = {
            "a": a,
            "b": b,
            "ratio": r.ratio,
            "ci_low": r.ci_low,
            "ci_high": r.ci_high,
            "confidence": r.confidence,
            "verdict": v,
            "threshold": threshold,
            "attempts": attempts,
            "stop_reason": pt.stop_reason,
            "a_timing": pt.a.to_dict(),
        }
        msg = (
            f"{b} / {a} = {r.ratio:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}] "
            f"({r.confidence:.0%} CI, n={r.n_a} pairs, {len(attempts)} attempt(s)): {v} "
            f"at threshold ±{threshold:.1%}"
        )
        status = "failed" if v == "slower" else "passed"
        tbps = inputs.io_bytes() / (pt.b.median_ms * 1e-3) / 1e12
        self._write(
            device,
            status,
            started,
            message=msg,
            correctness=corr,
            timing=pt.b.to_dict(),
            bytes=inputs.io_bytes(),
            tbps=tbps,
            plan=plan,
            comparison=comparison,
        )
        if status == "failed":
            raise CaseFailure(f"regression: {msg}")


def pytest_sessionstart(session: pytest.Session) -> None:
    global _writer, _cache
    _writer = None
    _cache = None
