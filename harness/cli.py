"""`python -m harness`: list a matrix, run it (pytest + xdist), rebuild reports, show the
environment.

Every user-facing problem ends as one `error: ...` line and exit code 2; exit code 1
means the run itself found failing cases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILURES, EXIT_ERROR = 0, 1, 2
DEFAULT_MATRIX = "matrices/smoke.toml"
DEFAULT_RESULTS = "reports/results"
DEFAULT_OUT = "reports"


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def _say(msg: str) -> None:
    print(f"[harness] {msg}", flush=True)


def _load(paths: Sequence[str]):
    from harness.matrix import MatrixError, load_matrix

    try:
        return [load_matrix(p) for p in paths]
    except MatrixError as exc:
        raise UserError(str(exc)) from None


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    rows = []
    for m in _load(args.matrix):
        for c in m.cases:
            if args.filter and args.filter not in c.id:
                continue
            rows.append(
                [
                    c.id,
                    f"{c.num_qo_heads}/{c.num_kv_heads}",
                    c.head_dim,
                    c.batch,
                    c.q_len,
                    c.kv_len,
                    c.page_size,
                    c.kv_dtype,
                    c.q_dtype,
                    "yes" if c.ragged else "no",
                    f"{c.score_scale:g}",
                ]
            )
    print(
        tabulate(
            rows,
            headers=[
                "case",
                "qo/kv heads",
                "head_dim",
                "batch",
                "q_len",
                "kv_len",
                "page",
                "kv dtype",
                "q dtype",
                "ragged",
                "score scale",
            ],
            tablefmt="github",
        )
    )
    print(f"\n{len(rows)} case(s)")
    return EXIT_OK


@contextlib.contextmanager
def baseline_checkout(rev: str | None) -> Iterator[Path | None]:
    """A detached git worktree of `rev` (the PR's target), removed afterwards."""
    if not rev:
        yield None
        return
    root = Path(__file__).resolve().parent.parent
    probe = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise UserError(f"--baseline-rev {rev!r}: no such commit in {root} (fetch it first)")
    where = Path(tempfile.mkdtemp(prefix="harness-base-")) / "tree"
    add = subprocess.run(
        ["git", "worktree", "add", "--detach", str(where), probe.stdout.strip()],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if add.returncode != 0:
        raise UserError(f"--baseline-rev {rev!r}: git worktree add failed: {add.stderr.strip()}")
    if not (where / "kernels" / "__init__.py").exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=root)
        raise UserError(f"--baseline-rev {rev!r}: that revision has no kernels/ package")
    _say(f"baseline revision {rev} ({probe.stdout.strip()[:12]}) checked out at {where}")
    try:
        yield where
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(where)], cwd=root, capture_output=True
        )


def device_banner(force: str) -> tuple[str, int]:
    """(banner line, GPU count). Says plainly when the run will be on the CPU."""
    from harness.gpu import cuda_usable

    if force != "cpu" and cuda_usable():
        import torch

        n = torch.cuda.device_count()
        names = sorted({torch.cuda.get_device_name(i) for i in range(n)})
        return f"device: {n} x {', '.join(names)} (CUDA {torch.version.cuda})", n
    if force == "cuda":
        raise UserError(
            "--device cuda given, but torch sees no CUDA device "
            "(check the driver, CUDA_VISIBLE_DEVICES and that torch is a CUDA build)"
        )
    why = "forced by --device cpu" if force == "cpu" else "no CUDA device found"
    return (
        f"NO GPU ({why}): running the whole pipeline on the CPU with the torch "
        "backends; CUDA backends will be skipped and timings are CPU timings"
    ), 0


def _build_kernels(defines: Sequence[str], cwd: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "kernels.build", *[f"--define={d}" for d in defines]]
    _say(f"building CUDA kernels in {cwd or '.'}: " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, cwd=cwd)
    if proc.returncode != 0:
        raise UserError("the CUDA kernel build failed (nvcc output above); no case was run")


def backends_for_run(backends: str, peers: bool) -> str:
    """The --backends value pytest gets. Without --backends the plugin runs every registered
    backend except peers (role "peer"); `--peers` adds them (HARNESS_PEERS=1 in pytest's
    environment), and with an explicit --backends list it appends the peers to that list."""
    if not peers or not backends.strip():
        return backends
    from harness.backends.peers import PEER_NAMES

    named = [b.strip() for b in backends.split(",") if b.strip()]
    return ",".join(named + [p for p in PEER_NAMES if p not in named])


def _warm_peers(matrices: Sequence[str]) -> None:
    """FlashInfer JIT-compiles each module on first use (25-130 s on an H100). Compile every
    module the matrix needs once, in parallel, before pytest starts: xdist workers' output
    is not shown, and a worker compiling inside a case would look hung (and could hit the
    case timeout). A failure here is only reported: the cases will record it."""
    cmd = [sys.executable, "-m", "harness.backends.peers", "--warmup"]
    for m in matrices:
        cmd += ["--matrix", m]
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        _say("flashinfer warm-up reported problems (above); the run goes on")


def pytest_command(
    args: argparse.Namespace, run_id: str, workers: int, baseline_kernels: Path | None = None
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "harness.pytest_plugin",
        "-p",
        "no:cacheprovider",
        "-p",
        "xdist.plugin",
        *args.matrix,
        "--results-dir",
        args.results_dir,
        "--run-id",
        run_id,
        "--harness-device",
        args.device,
        "-o",
        "addopts=",
        "-rfEs",
        "--tb=short",
    ]
    if workers > 1:
        # Not loadgroup: in pytest-xdist 3.8 its scheduler deadlocks once a crashed worker is
        # replaced (pytest-xdist #1323, #1327, #1378). `load` sends consecutive items (the
        # backends of one case) to one worker in chunks, so inputs are still mostly reused.
        cmd += ["-n", str(workers), "--dist", "load"]
    if args.k:
        cmd += ["-k", args.k]
    backends = backends_for_run(args.backends, getattr(args, "peers", False))
    if backends:
        cmd += ["--backends", backends]
    if args.no_timing:
        cmd.append("--no-timing")
    if args.timing_budget_ms:
        cmd += ["--timing-budget-ms", str(args.timing_budget_ms)]
    for pair in args.ab:
        cmd += ["--ab", pair]
    if args.threshold:
        cmd += ["--threshold", str(args.threshold)]
    if args.use_graphs:
        cmd.append("--use-graphs")
    if args.warm_l2:
        cmd.append("--warm-l2")
    if baseline_kernels:
        cmd += ["--baseline-kernels", str(baseline_kernels)]
    if getattr(args, "planted_kernels", None):
        cmd += ["--planted-kernels", str(args.planted_kernels)]
    if args.case_timeout is not None:
        cmd += ["--case-timeout", str(args.case_timeout)]
    if args.inject_faults:
        cmd += ["--inject-faults", args.inject_faults]
    if workers > 1:
        cmd += ["--max-worker-restart", "1000"]  # a crash costs one case, never the run
    return cmd + list(args.pytest_args)


def cmd_run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    matrices = _load(args.matrix)
    n_cases = sum(len(m.cases) for m in matrices)
    banner, gpus = device_banner(args.device)
    _say(banner)
    _say(f"matrix: {', '.join(args.matrix)} ({n_cases} cases)")
    if gpus and not args.no_build:
        _build_kernels(args.define)
    if args.peers:
        _say(
            "peers: torch_sdpa and the flashinfer_* backends run too (skipped with a reason "
            "where unsupported)"
        )
        if gpus:
            _warm_peers(args.matrix)
    with (
        baseline_checkout(args.baseline_rev) as base_dir,
        planted_copy(args.planted_slowdown) as planted_dir,
    ):
        if base_dir is not None:
            if gpus and not args.no_build:
                _build_kernels(args.define, cwd=base_dir)
            for kernel in ("cuda_baseline", "cuda_grouped"):
                args.ab.append(f"{kernel}@base:{kernel}")
        if planted_dir is not None:
            if gpus:
                _build_kernels(
                    [*args.define, _planted_define(args.planted_slowdown)], cwd=planted_dir
                )
            args.ab.append("cuda_grouped:cuda_grouped@planted")
            args.planted_kernels = planted_dir / "kernels"
        return _run_and_report(args, started, banner, gpus, base_dir)


def _planted_define(permille: int) -> str:
    return f"HARNESS_PLANTED_SLOWDOWN={permille}"


@contextlib.contextmanager
def planted_copy(permille: int | None) -> Iterator[Path | None]:
    """A throwaway copy of kernels/ whose library is built with a planted slowdown of
    `permille` per mille (test only: proves the verdicts catch a known regression)."""
    if not permille:
        yield None
        return
    if permille < 0:
        raise UserError("--planted-slowdown must be a positive number of per mille")
    root = Path(tempfile.mkdtemp(prefix="harness-planted-"))
    src = Path(__file__).resolve().parent.parent / "kernels"
    shutil.copytree(src, root / "kernels", ignore=shutil.ignore_patterns("_build", "__pycache__"))
    (root / "kernels" / "BUILD_DEFINES").write_text(_planted_define(permille) + "\n")
    _say(f"planted slowdown: {permille} per mille in a copy of kernels/ at {root}")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_and_report(
    args: argparse.Namespace, started: float, banner: str, gpus: int, base_dir: Path | None
) -> int:
    workers = args.workers if args.workers is not None else max(1, gpus)
    results_dir = Path(args.results_dir)
    if results_dir.exists() and not args.keep_results:
        shutil.rmtree(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    cmd = pytest_command(args, run_id, workers, base_dir / "kernels" if base_dir else None)
    if workers > 1:
        _say(f"run {run_id}: {workers} xdist workers, one GPU each; results -> {results_dir}/")
    else:
        _say(
            f"run {run_id}: one test process, resumed in a new one if a case kills it; "
            f"results -> {results_dir}/"
        )
    # Only the plugins the run needs: every worker (and each replacement after a crash)
    # starts faster, and third-party plugins (pytest-benchmark disables itself under
    # xdist; pytest-timeout would fight our watchdog) stay out of the measurements.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    env.update(PYTHONUNBUFFERED="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    if args.define:  # the workers' kernels package loads the library built with these
        env["HARNESS_KERNEL_DEFINES"] = ",".join(args.define)
    if args.peers:
        from harness.backends.base import PEERS_ENV

        env[PEERS_ENV] = "1"
    rc = (
        _run_forwarding_signals(cmd, env)
        if workers > 1
        else _supervise(cmd, env, results_dir, run_id)
    )
    if rc == 5:
        raise UserError("no case selected (check --matrix and -k)")
    report_rc = _report([str(results_dir)], args.out, args, device_note=banner)
    _say(f"done in {time.perf_counter() - started:.1f} s")
    if rc not in (0, 1):
        _say(
            f"pytest exited with {rc} (interrupted or internal error); the report holds what "
            "finished"
        )
        return EXIT_ERROR
    return EXIT_FAILURES if rc == 1 else report_rc


MAX_RESUMES = 1000
_stopping: list[int] = []  # signals received: no resuming after the user or CI said stop


def _supervise(cmd: list[str], env: dict[str, str], results: Path, run_id: str) -> int:
    """One test process (no xdist start-up cost) that is resumed in a fresh process when
    a case kills it (segfault, CUDA fault, watchdog timeout): the dead process's case is
    recorded as an error and the finished ones are skipped. Returns pytest's exit code,
    or, after resuming, 1 if any case failed or errored and 0 otherwise."""
    from harness.pytest_plugin import inflight_path, record_dead_item
    from harness.results import run_rows

    resumes = 0
    while True:
        rc = _run_forwarding_signals(cmd + (["--resume"] if resumes else []), env)
        if _stopping or rc in (0, 1, 2, 4) or (rc == 5 and not resumes):
            break
        if rc == 5:  # a resume found nothing left to run
            rc = 0
            break
        marker = inflight_path(results, run_id)
        nodeid = marker.read_text().strip() if marker.exists() else ""
        marker.unlink(missing_ok=True)
        if nodeid:
            record_dead_item(
                results, run_id, nodeid, "the test process", "the run was resumed in a new process"
            )
        elif rc != 3:  # it died outside any case: resuming would not get further
            break
        resumes += 1
        if resumes > MAX_RESUMES:
            break
        _say(
            f"test process ended with {rc} in {nodeid or 'a case'}; resuming the run "
            "without the cases already recorded"
        )
    if not resumes or _stopping:
        return rc
    return 1 if any(r.status in ("failed", "error") for r in run_rows(results, run_id)) else 0


def _run_forwarding_signals(cmd: list[str], env: dict[str, str]) -> int:
    """Run pytest; a SIGTERM (CI cancelling the job) or Ctrl-C is passed on to it, and we
    wait for it to stop cleanly so the report can still be written from what finished."""
    proc = subprocess.Popen(cmd, env=env)

    sent = []

    def forward(signum: int, frame: object) -> None:
        _stopping.append(signum)
        if not sent:  # once: a second signal would interrupt pytest's own clean shutdown
            sent.append(signum)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    old = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # Ctrl-C reached pytest too; just wait for it
                sent.append(signal.SIGINT)
                _stopping.append(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, old)


def _report(paths: Sequence[str], out: str, args: argparse.Namespace, device_note: str = "") -> int:
    from harness.report import generate
    from harness.report.artifacts import artifact_base_from_env

    meta = {"target_branch": getattr(args, "target_branch", "") or "", "note": device_note}
    url = getattr(args, "artifact_url", None) or artifact_base_from_env(out)
    try:
        outcome = generate(
            paths, Path(out), meta=meta, png=not getattr(args, "no_png", False), artifact_url=url
        )
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    for p in outcome.problems:
        _say(f"problem: {p}")
    if outcome.chart is not None:
        _say(f"chart: {outcome.chart.path or outcome.chart.message}")
    _say(
        f"report: {outcome.markdown_path} and {outcome.junit_path} ({_counts_text(outcome.counts)})"
    )
    if not outcome.rows:
        raise UserError(f"no results found in {', '.join(paths)}")
    return EXIT_OK


def _counts_text(counts: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items())


def cmd_report(args: argparse.Namespace) -> int:
    return _report(args.paths or [DEFAULT_RESULTS], args.out, args)


def cmd_post(args: argparse.Namespace) -> int:
    from harness.report.post import run

    return run(args)


def cmd_compare(args: argparse.Namespace) -> int:
    """Across runs: head result set vs base result set, exit 1 on a regression."""
    from harness.report import generate
    from harness.report.compare import NoiseProfile, compare_runs
    from harness.results import read_results

    sides = []
    for label, path in (("base", args.base), ("head", args.head)):
        try:
            rows, problems = read_results([path])
        except FileNotFoundError as exc:
            raise UserError(f"{label}: {exc}") from None
        for p in problems:
            _say(f"{label}: skipped a bad results line: {p}")
        if not rows:
            raise UserError(f"{label}: no results in {path}")
        sides.append(rows)
    profile = None
    if args.profile:
        try:
            profile = NoiseProfile.load(Path(args.profile))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    outcome = compare_runs(
        sides[0],
        sides[1],
        threshold=args.threshold,
        profile=profile,
        allow_cross_machine=args.allow_cross_machine,
    )
    for what, items in (
        ("only in base", outcome.unmatched_base),
        ("only in head", outcome.unmatched_head),
        ("refused, different GPU (use --allow-cross-machine)", outcome.refused),
    ):
        for item in items:
            _say(f"{what}: {item}")
    if not outcome.rows:
        raise UserError("no case was timed in both result sets: nothing to compare")
    out = Path(args.out)
    comp_dir = out / "compare-results"
    comp_dir.mkdir(parents=True, exist_ok=True)
    (comp_dir / "compare.jsonl").write_text("".join(r.to_json() + "\n" for r in outcome.rows))
    rep = generate([comp_dir], out, meta={"note": "comparison of two runs (across runs)"})
    verdicts: dict[str, int] = {}
    for r in outcome.rows:
        verdicts[r.comparison["verdict"]] = verdicts.get(r.comparison["verdict"], 0) + 1
    _say(f"verdicts: {_counts_text(verdicts)}; report: {rep.markdown_path}, {rep.junit_path}")
    for r in outcome.regressions:
        _say(f"REGRESSION {r.case_id} [{r.backend}] on {r.device_name}: {r.message}")
    return EXIT_FAILURES if outcome.regressions else EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from harness.calibrate import calibrate

    _load(args.matrix)
    extra = ["--device", args.device]
    if args.workers is not None:
        extra += ["-n", str(args.workers)]
    if args.k:
        extra += ["-k", args.k]
    if args.timing_budget_ms:
        extra += ["--timing-budget-ms", str(args.timing_budget_ms)]
    try:
        cal = calibrate(args.matrix, args.backend, args.runs, args.threshold, Path(args.out), extra)
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    print(cal.table)
    _say(
        f"A/A verdicts: {_counts_text(cal.aa_verdicts)}; false-verdict rate "
        f"{cal.false_verdict_rate:.1%}; profile: {Path(args.out) / 'noise-profile.json'}"
    )
    return EXIT_FAILURES if cal.false_verdict_rate > 0 else EXIT_OK


def cmd_env(args: argparse.Namespace) -> int:
    import torch

    from harness.gpu import environment, select_device

    device = torch.device("cpu") if args.device == "cpu" else select_device()
    print(json.dumps(environment(device), indent=2, sort_keys=True))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness",
        description="Regression harness for paged-KV decode attention kernels: checks every "
        "case of a matrix against a reference, times it, and writes JUnit + markdown reports.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pl = sub.add_parser("list", help="print the cases a matrix expands to")
    pl.add_argument("--matrix", action="append", default=None, help="matrix file (repeatable)")
    pl.add_argument("--filter", default="", help="only case ids containing this text")
    pl.set_defaults(func=cmd_list)

    pr = sub.add_parser(
        "run",
        help="check and time a matrix, then write the reports",
        description="Runs the matrix as pytest items (sharded with pytest-xdist, "
        "one GPU per worker), then writes reports/junit.xml and reports/summary.md."
        " Arguments after -- go to pytest.",
    )
    pr.add_argument(
        "--matrix",
        action="append",
        default=None,
        help=f"matrix file (repeatable; default {DEFAULT_MATRIX})",
    )
    pr.add_argument(
        "-n",
        "--workers",
        type=int,
        default=None,
        help="xdist workers, one GPU each (default: one per GPU); 0 or 1: one test process, "
        "resumed in a new one after a crash (the default on one GPU or a CPU)",
    )
    pr.add_argument("-k", default="", help="pytest -k expression over case ids and backends")
    pr.add_argument(
        "--backends",
        default="",
        help="comma-separated backends (default: all except the peers)",
    )
    pr.add_argument(
        "--peers",
        action="store_true",
        help="also run the peer backends (torch_sdpa, flashinfer_fa2, flashinfer_xqa, "
        "flashinfer_trtllm_gen) and JIT-compile FlashInfer's modules first",
    )
    pr.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: GPU when present; cpu/cuda force one",
    )
    pr.add_argument("--results-dir", default=DEFAULT_RESULTS)
    pr.add_argument("--out", default=DEFAULT_OUT, help="report folder (default: %(default)s)")
    pr.add_argument(
        "--keep-results",
        action="store_true",
        help="append to existing result files instead of starting afresh",
    )
    pr.add_argument("--no-timing", action="store_true", help="correctness only")
    pr.add_argument(
        "--timing-budget-ms", type=float, default=None, help="timing budget per case x backend"
    )
    pr.add_argument("--no-build", action="store_true", help="do not build the CUDA kernels first")
    pr.add_argument(
        "--define",
        action="append",
        default=[],
        help="compile-time define for the kernel build (NAME=VALUE)",
    )
    pr.add_argument(
        "--ab",
        action="append",
        default=[],
        metavar="A:B",
        help="also time backend B against A interleaved in one process, with a verdict",
    )
    pr.add_argument(
        "--baseline-rev",
        default=None,
        metavar="REV",
        help="build REV's kernels too (git worktree) and time each CUDA kernel against its "
        "REV version in one process (adds --ab cuda_grouped@base:cuda_grouped, ...)",
    )
    pr.add_argument("--threshold", type=float, default=None, help="A/B verdict threshold")
    pr.add_argument(
        "--planted-slowdown",
        type=int,
        default=None,
        metavar="PERMILLE",
        help="TEST ONLY: also build a copy of the kernels whose grouped kernel runs PERMILLE "
        "per mille longer, and add --ab cuda_grouped:cuda_grouped@planted",
    )
    pr.add_argument(
        "--case-timeout",
        type=float,
        default=None,
        help="seconds before a hung case is recorded as a timeout (default: matrix, 300)",
    )
    pr.add_argument(
        "--inject-faults",
        default="",
        metavar="KIND@CASE,...",
        help="TEST ONLY: plant crash/hang/oom faults (with --backends fault_injector)",
    )
    pr.add_argument("--use-graphs", action="store_true", help="time CUDA-graph replays")
    pr.add_argument("--warm-l2", action="store_true", help="keep L2 warm between launches")
    pr.add_argument(
        "--target-branch", default=os.environ.get("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "")
    )
    pr.add_argument("pytest_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    pr.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="rebuild junit.xml and summary.md from result files")
    rp.add_argument("paths", nargs="*", help=f"result files or folders (default {DEFAULT_RESULTS})")
    rp.add_argument("--out", default=DEFAULT_OUT)
    rp.add_argument("--target-branch", default="")
    rp.add_argument(
        "--no-png", action="store_true", help="do not draw speedup.png (needs matplotlib)"
    )
    rp.add_argument(
        "--artifact-url",
        default=None,
        help="URL where the report folder is browsable (ending in / = a folder; default "
        "HARNESS_ARTIFACT_URL or derived from GitLab CI / Jenkins / GitHub Actions)",
    )
    rp.set_defaults(func=cmd_report)

    from harness.report.post import EXIT_CODES_TEXT, add_arguments

    pp = sub.add_parser(
        "post",
        help="post or update the report as one comment on the GitHub PR / GitLab MR",
        description="Posts reports/summary.md as one PR/MR comment, or updates the one it "
        "posted before (found by a hidden marker and the token's own user). Target from "
        "flags, HARNESS_* variables, or GitHub Actions / GitLab CI / Jenkins variables.",
        epilog=EXIT_CODES_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(pp)
    pp.set_defaults(func=cmd_post)

    pc = sub.add_parser(
        "compare",
        help="compare two result sets case by case (exit 1 on a regression)",
        description="Across-run comparison: each case x backend x GPU timed in both BASE and "
        "HEAD is judged by a bootstrap interval of median(head)/median(base). Exit codes: "
        "0 no regression, 1 regression(s), 2 error.",
    )
    pc.add_argument("base", help="base (target branch) results: folder or .jsonl")
    pc.add_argument("head", help="head (this PR) results: folder or .jsonl")
    pc.add_argument("--threshold", type=float, default=None, help="verdict threshold")
    pc.add_argument("--profile", default=None, help="noise profile JSON from calibrate")
    pc.add_argument("--allow-cross-machine", action="store_true")
    pc.add_argument("--out", default="reports/compare")
    pc.set_defaults(func=cmd_compare)

    pk = sub.add_parser(
        "calibrate",
        help="A/A runs: noise floor, false-verdict rate, noise profile for compare",
    )
    pk.add_argument("--matrix", action="append", default=None)
    pk.add_argument("--backend", default="cuda_grouped", help="kernel timed against itself")
    pk.add_argument("--runs", type=int, default=2)
    pk.add_argument("--threshold", type=float, default=0.01)
    pk.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    pk.add_argument("-n", "--workers", type=int, default=None)
    pk.add_argument("-k", default="")
    pk.add_argument("--timing-budget-ms", type=float, default=None)
    pk.add_argument("--out", default="reports/calibration")
    pk.set_defaults(func=cmd_calibrate)

    pe = sub.add_parser("env", help="print the environment fingerprint as JSON")
    pe.add_argument("--device", choices=("auto", "cpu"), default="auto")
    pe.set_defaults(func=cmd_env)
    return p


def _check_threshold(args: argparse.Namespace) -> None:
    thr = getattr(args, "threshold", None)
    if thr is not None and not 0 < thr < 1:
        raise UserError(f"--threshold {thr}: must be a fraction in (0, 1), e.g. 0.01 for 1 %")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "matrix", "unset") is None:
        args.matrix = [DEFAULT_MATRIX]
    if getattr(args, "pytest_args", None) and args.pytest_args[0] == "--":
        args.pytest_args = args.pytest_args[1:]
    try:
        _check_threshold(args)
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; results written so far are kept", file=sys.stderr)
        return EXIT_ERROR
