"""Build the harness image and run a nox session inside it, with the docker SDK.

Why the SDK and not the docker CLI: live build logs with real error detection, GPU
requests as objects, and container removal on every exit path without parsing CLI text.

    python -m harness.container run [--gpus all|none|0,1] [--session gpu_matrix] [-- ARGS]
    python -m harness.container build [--base-image IMAGE] [--build-arg K=V ...]

The image is tagged by a hash of everything sent to the daemon (context files, build
arguments), so an unchanged tree reuses the image without building. Builds and runs use
host networking only (never a bridge). Every user-facing problem ends as one
`error: ...` line and exit code 2, like `python -m harness`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

IMAGE_REPO = "decode-attn-harness"
WORKDIR = "/workspace"
DEFAULT_SESSION = "gpu_matrix"
EXTRA_DIR = "ci/image-extra"  # the Dockerfile copies it into the builder stage only
EXIT_ERROR, EXIT_TIMEOUT, EXIT_INTERRUPTED = 2, 124, 130
CA_ENV_VARS = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")

# Passed into the container by default: CI context that reports and the PR bot read.
ENV_PREFIXES = ("CI_", "GITLAB_", "GITHUB_", "HARNESS_")
ENV_NAMES = frozenset(
    {
        "CI",
        "BUILD_ID",
        "BUILD_NUMBER",
        "BUILD_URL",
        "JOB_NAME",
        "JOB_URL",
        "JENKINS_URL",
        "NODE_NAME",
        "BRANCH_NAME",
        "CHANGE_ID",
        "CHANGE_TARGET",
        "CHANGE_URL",
        "GIT_COMMIT",
        "GIT_BRANCH",
        "GIT_URL",
        "TZ",
    }
)
# Owned by the image or by this runner: passing the host's value would break the run
# (CUDA_VISIBLE_DEVICES numbers host GPUs; the container sees only the requested ones).
ENV_DENY = frozenset(
    {
        "HARNESS_SYSTEM_PYTHON",
        "HARNESS_CUDA_ARCHS",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
    }
)
ENV_DENY_PREFIXES = ("HARNESS_CONTAINER_",)
# Names that look like credentials are passed only when named with --env, never logged,
# and their values are masked in the streamed container output.
SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE|CREDENTIAL|COOKIE|JWT|AUTH|(^|_)KEY($|_)", re.I
)
MASK = "[MASKED]"
MIN_MASKED_LEN = 6


class ContainerError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def _say(msg: str) -> None:
    print(f"[container] {msg}", flush=True)


# --- build context and its content hash ---------------------------------------------


@dataclass(frozen=True)
class ContextFile:
    """One file sent to the daemon: its name in the context and where it comes from."""

    arcname: str
    source: Path

    @property
    def executable(self) -> bool:
        return os.access(self.source, os.X_OK)


def collect_context(
    root: Path, dockerfile: str = "Dockerfile", extras: Iterable[tuple[str, Path]] = ()
) -> tuple[ContextFile, ...]:
    """The files `docker build` would send (the SDK's own .dockerignore matcher), plus
    extras injected under chosen names (they win over a file of the same name)."""
    from docker.utils.build import exclude_paths

    root = Path(root).resolve()
    ignore = root / ".dockerignore"
    patterns = ignore.read_text().splitlines() if ignore.is_file() else []
    patterns = [p.strip() for p in patterns if p.strip() and not p.lstrip().startswith("#")]
    picked = {
        rel: root / rel
        for rel in exclude_paths(str(root), patterns, dockerfile=dockerfile)
        if (root / rel).is_file()
    }
    for arcname, source in extras:
        source = Path(source)
        if not source.is_file():
            raise ContainerError(f"file for the build context not found: {source}")
        picked[arcname] = source
    if dockerfile not in picked:
        raise ContainerError(f"no {dockerfile} in {root}")
    return tuple(ContextFile(name, picked[name]) for name in sorted(picked))


def _file_mode(f: ContextFile) -> int:
    return 0o755 if f.executable else 0o644


def context_digest(
    files: Sequence[ContextFile], build_args: Mapping[str, str], dockerfile: str = "Dockerfile"
) -> str:
    """sha256 over names, modes, contents and build arguments: the image's identity."""
    h = hashlib.sha256()
    h.update(f"dockerfile={dockerfile}\0".encode())
    for key in sorted(build_args):
        h.update(f"arg {key}={build_args[key]}\0".encode())
    for f in files:
        h.update(f"file {f.arcname} {_file_mode(f):o} {f.source.stat().st_size}\0".encode())
        with f.source.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def image_tag(digest: str, repo: str = IMAGE_REPO) -> str:
    """`repo:<16 hex>`: short enough to read, long enough never to collide in practice."""
    return f"{repo}:{digest[:16]}"


def write_context(files: Sequence[ContextFile], fileobj: IO[bytes]) -> None:
    """A reproducible tar (fixed owner and mtime) so the daemon's layer cache keys on content."""
    with tarfile.open(mode="w", fileobj=fileobj) as tar:
        for f in files:
            info = tarfile.TarInfo(f.arcname)
            info.size = f.source.stat().st_size
            info.mode = _file_mode(f)
            info.mtime = 0
            with f.source.open("rb") as fh:
                tar.addfile(info, fh)
    fileobj.seek(0)


# --- GPUs and environment ---------------------------------------------------------------


def device_requests(gpus: str) -> list[Any]:
    """`all` -> every GPU, `none`/empty -> no GPU (CPU run), `0,1` or GPU UUIDs -> those."""
    from docker.types import DeviceRequest

    spec = gpus.strip().lower()
    if spec in ("", "none", "cpu"):
        return []
    if spec == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    ids = [part.strip() for part in gpus.split(",")]
    if any(not part or not re.fullmatch(r"[A-Za-z0-9-]+", part) for part in ids):
        raise ContainerError(
            f"--gpus {gpus!r}: expected all, none, or a comma list of GPU indices/UUIDs (e.g. 0,1)"
        )
    return [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]


def is_secret_name(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


@dataclass(frozen=True)
class EnvSelection:
    """What goes into the container; `secret_names` are never logged and get masked."""

    values: tuple[tuple[str, str], ...]
    secret_names: frozenset[str] = field(default_factory=frozenset)

    def as_dict(self) -> dict[str, str]:
        return dict(self.values)

    def secret_values(self) -> tuple[str, ...]:
        vals = {v for k, v in self.values if k in self.secret_names and len(v) >= MIN_MASKED_LEN}
        return tuple(sorted(vals, key=len, reverse=True))

    def describe(self) -> str:
        """Names only, never values: safe for CI logs."""
        names = [f"{k} (hidden)" if k in self.secret_names else k for k, _ in self.values]
        return ", ".join(names) if names else "none"


def select_env(environ: Mapping[str, str], explicit: Iterable[str] = ()) -> EnvSelection:
    """CI context variables by allowlist; credentials and runner-owned names only when the
    caller names them explicitly (an explicit name that is unset is an error)."""
    chosen: dict[str, str] = {}
    for name, value in environ.items():
        allowed = name in ENV_NAMES or name.startswith(ENV_PREFIXES)
        denied = name in ENV_DENY or name.startswith(ENV_DENY_PREFIXES) or is_secret_name(name)
        if allowed and not denied:
            chosen[name] = value
    for name in explicit:
        if name not in environ:
            raise ContainerError(f"--env {name}: not set in this environment")
        chosen[name] = environ[name]
    secrets = frozenset(n for n in chosen if is_secret_name(n))
    return EnvSelection(tuple(sorted(chosen.items())), secrets)


def redact(text: str, secrets: Sequence[str]) -> str:
    for value in secrets:
        text = text.replace(value, MASK)
    return text


# --- the daemon -------------------------------------------------------------------------


def connect(factory: Callable[[], Any] | None = None) -> Any:
    """A docker client that answered a ping, or one line saying why not."""
    import docker
    from docker.errors import DockerException

    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = (factory or docker.from_env)()
        client.ping()
    except DockerException as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ContainerError(
            f"cannot reach the docker daemon at {host}: {reason[:200]} "
            "(start dockerd, or point DOCKER_HOST at a running daemon)"
        ) from None
    except Exception as exc:  # requests' own errors when the socket is half there
        raise ContainerError(
            f"cannot reach the docker daemon at {host}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    return client


NVIDIA_MISSING = (
    "could not select device driver",
    "unknown or invalid runtime name: nvidia",
    "nvidia-container-cli",
    "nvidia-container-runtime",
)


def explain_start_failure(message: str, gpus: str) -> str:
    """One line for a container that would not start; names the NVIDIA runtime when that
    is what is missing."""
    low = message.lower()
    if device_requests_wanted(gpus) and any(key in low for key in NVIDIA_MISSING):
        return (
            f"GPUs were requested (--gpus {gpus}) but the docker daemon has no NVIDIA runtime "
            "(install the NVIDIA Container Toolkit and run `nvidia-ctk runtime configure "
            "--runtime=docker`, or pass --gpus none for a CPU run)"
        )
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return f"the container did not start: {first[:300]}"


def device_requests_wanted(gpus: str) -> bool:
    return gpus.strip().lower() not in ("", "none", "cpu")


# --- build ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildSpec:
    """What the image is made of; its digest is the image tag."""

    root: Path
    build_args: tuple[tuple[str, str], ...] = ()
    extras: tuple[tuple[str, Path], ...] = ()
    dockerfile: str = "Dockerfile"
    repo: str = IMAGE_REPO


def extras_for(ca_bundle: Path | None, wheels: Iterable[Path]) -> tuple[tuple[str, Path], ...]:
    """Map a CA bundle and wheels onto their names under ci/image-extra/."""
    out: list[tuple[str, Path]] = []
    if ca_bundle is not None:
        out.append((f"{EXTRA_DIR}/ca-certificates.crt", Path(ca_bundle)))
    out += [(f"{EXTRA_DIR}/wheels/{Path(w).name}", Path(w)) for w in wheels]
    return tuple(out)


def default_ca_bundle(environ: Mapping[str, str]) -> Path | None:
    """The bundle this host's pip/requests trust, so pip in the build trusts it too."""
    for var in CA_ENV_VARS:
        value = environ.get(var, "")
        if value and Path(value).is_file():
            return Path(value)
    return None


def stream_build(chunks: Iterable[Mapping[str, Any]], write: Callable[[str], None]) -> str | None:
    """Print the build log live; return the image id, or raise on the first error chunk
    (APIClient.build never raises for a failing step: the error is in the stream)."""
    image_id = None
    for chunk in chunks:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail") or {}
            text = str(chunk.get("error") or detail.get("message") or "unknown error").strip()
            raise ContainerError(f"image build failed: {text.splitlines()[-1][:300]} (log above)")
        if "stream" in chunk:
            write(str(chunk["stream"]))
        elif "status" in chunk:
            write(f"{chunk['status']} {chunk.get('progress', '')}".rstrip() + "\n")
        aux = chunk.get("aux")
        if isinstance(aux, Mapping) and "ID" in aux:
            image_id = str(aux["ID"])
    return image_id


def ensure_image(client: Any, spec: BuildSpec, rebuild: bool = False) -> str:
    """Build the image unless one with the same content tag exists; return its tag."""
    import requests
    from docker.errors import APIError, ImageNotFound

    files = collect_context(spec.root, spec.dockerfile, spec.extras)
    args = dict(spec.build_args)
    tag = image_tag(context_digest(files, args, spec.dockerfile), spec.repo)
    if not rebuild:
        try:
            client.images.get(tag)
            _say(f"image {tag} is up to date (same content hash): not building")
            return tag
        except ImageNotFound:
            pass
    size = sum(f.source.stat().st_size for f in files) / 1e6
    shown = ", ".join(f"{k}={v}" for k, v in sorted(args.items())) or "defaults"
    _say(f"building {tag} from {len(files)} files ({size:.1f} MB); build args: {shown}")

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    with tempfile.TemporaryFile() as ctx:
        write_context(files, ctx)
        try:
            chunks = client.api.build(
                fileobj=ctx,
                custom_context=True,
                tag=tag,
                dockerfile=spec.dockerfile,
                buildargs=args,
                network_mode="host",
                rm=True,
                forcerm=True,
                nocache=rebuild,
                decode=True,
                labels={"org.opencontainers.image.title": spec.repo},
            )
            stream_build(chunks, write)
        except APIError as exc:
            raise ContainerError(f"image build failed: {exc.explanation or exc}") from None
        except requests.exceptions.ConnectionError as exc:
            raise ContainerError(f"lost the docker daemon during the build: {exc}") from None
    _say(f"built {tag}")
    return tag


# --- run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One nox session in one container."""

    image: str
    reports_dir: Path
    session: str = DEFAULT_SESSION
    session_args: tuple[str, ...] = ()
    gpus: str = "all"
    env: EnvSelection = field(default_factory=lambda: EnvSelection(()))
    user: str | None = None  # "uid:gid"; None = the image's own non-root user
    timeout_s: float | None = None
    repo_root: Path | None = None  # mount the whole checkout (needed by --baseline-rev)


def container_command(session: str, args: Sequence[str]) -> list[str]:
    return ["nox", "-s", session, *(["--", *args] if args else [])]


def caller_user() -> str:
    """`uid:gid` of this process: files written into the mounted reports stay the caller's."""
    return f"{os.getuid()}:{os.getgid()}"


def container_kwargs(spec: RunSpec) -> dict[str, Any]:
    """Arguments for client.containers.create (pure; unit-tested)."""
    env = spec.env.as_dict()
    volumes = {str(Path(spec.reports_dir).resolve()): {"bind": f"{WORKDIR}/reports", "mode": "rw"}}
    if spec.repo_root is not None:
        volumes = {str(Path(spec.repo_root).resolve()): {"bind": WORKDIR, "mode": "rw"}, **volumes}
        # the checkout belongs to the caller, not to the container's uid: let git read it
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory", GIT_CONFIG_VALUE_0="*")
    if spec.user is not None:
        env.setdefault("HOME", "/tmp")  # an arbitrary uid has no home in the image
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "command": container_command(spec.session, spec.session_args),
        "environment": env,
        "volumes": volumes,
        "working_dir": WORKDIR,
        "network_mode": "host",
        "device_requests": device_requests(spec.gpus),
        "init": True,
        "shm_size": "1g",
        "labels": {"org.opencontainers.image.title": IMAGE_REPO},
    }
    if spec.user is not None:
        kwargs["user"] = spec.user
    return kwargs


class _LinePrinter:
    """Streams container output line by line, masking secret values (a value split across
    two chunks is still masked because only whole lines are printed)."""

    def __init__(self, secrets: Sequence[str], out: IO[str]) -> None:
        self.secrets, self.out, self.pending = secrets, out, ""

    def feed(self, data: bytes) -> None:
        self.pending += data.decode("utf-8", errors="replace")
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.out.write(redact(line, self.secrets) + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.pending:
            self.out.write(redact(self.pending, self.secrets) + "\n")
            self.out.flush()
            self.pending = ""


def _follow(container: Any, printer: _LinePrinter) -> None:
    try:
        for data in container.logs(stream=True, follow=True):
            printer.feed(data)
    except Exception as exc:  # the container was removed under us (Ctrl-C, timeout)
        _say(f"log stream ended: {type(exc).__name__}")
    finally:
        printer.close()


def run_container(client: Any, spec: RunSpec, out: IO[str] | None = None) -> int:
    """Run the session; return its exit code (124 timeout). The container is removed on
    success, failure, timeout and Ctrl-C alike."""
    import requests
    from docker.errors import APIError, ImageNotFound, NotFound

    spec.reports_dir.mkdir(parents=True, exist_ok=True)
    kwargs = container_kwargs(spec)
    _say(
        f"running `{' '.join(kwargs['command'])}` in {spec.image} "
        f"(gpus: {spec.gpus or 'none'}; user: {spec.user or 'image default'}; "
        f"reports: {spec.reports_dir} -> {WORKDIR}/reports)"
    )
    _say(f"environment passed: {spec.env.describe()}")
    container = None
    follower: threading.Thread | None = None
    try:
        try:
            container = client.containers.create(**kwargs)
            container.start()
        except ImageNotFound:
            raise ContainerError(
                f"image {spec.image} not found (build it, or drop --image)"
            ) from None
        except APIError as exc:
            raise ContainerError(
                explain_start_failure(str(exc.explanation or exc), spec.gpus)
            ) from None
        printer = _LinePrinter(spec.env.secret_values(), out or sys.stdout)
        follower = threading.Thread(target=_follow, args=(container, printer), daemon=True)
        follower.start()
        try:
            result = container.wait(timeout=spec.timeout_s)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            _say(f"timed out after {spec.timeout_s:g} s: stopping the container")
            container.kill()
            return EXIT_TIMEOUT
        follower.join(timeout=10)
        code = int(result.get("StatusCode", 1))
        _say(f"session {spec.session} exited with {code}")
        return code
    finally:
        if container is not None:
            try:
                container.remove(force=True)
                _say(f"removed container {container.short_id}")
            except NotFound:
                pass
            except APIError as exc:
                _say(f"could not remove container {container.short_id}: {exc.explanation}")
        if follower is not None:
            follower.join(timeout=5)


# --- command line -----------------------------------------------------------------------


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _user_for(choice: str) -> str | None:
    if choice == "caller":
        return caller_user()
    if choice == "image":
        return None
    if not re.fullmatch(r"\d+(:\d+)?", choice):
        raise ContainerError(f"--user {choice!r}: expected caller, image or UID[:GID]")
    return choice


def _build_args(pairs: Sequence[str], base_image: str) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    if base_image:
        out["BASE_IMAGE"] = base_image
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ContainerError(f"--build-arg {pair!r}: expected NAME=VALUE")
        out[key] = value
    return tuple(sorted(out.items()))


def spec_from_args(args: argparse.Namespace, root: Path) -> BuildSpec:
    ca = Path(args.ca_bundle) if args.ca_bundle else default_ca_bundle(os.environ)
    return BuildSpec(
        root=root,
        build_args=_build_args(args.build_arg, args.base_image),
        extras=extras_for(ca, [Path(w) for w in args.wheel]),
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.container",
        description="Build the harness image (tagged by content hash) and run a nox session "
        "in it with GPUs. Defaults come from HARNESS_CONTAINER_* variables.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=".", help="repository root (build context)")
    common.add_argument(
        "--base-image",
        default=os.environ.get("HARNESS_CONTAINER_BASE_IMAGE", ""),
        help="BASE_IMAGE build argument (default: the Dockerfile's CUDA devel image)",
    )
    common.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    common.add_argument(
        "--ca-bundle", default="", help="CA bundle for pip in the build (default: $PIP_CERT...)"
    )
    common.add_argument("--wheel", action="append", default=[], help="wheel for pip in the build")
    common.add_argument("--rebuild", action="store_true", help="build even if the tag exists")

    pb = sub.add_parser("build", parents=[common], help="build (or reuse) the image, print its tag")
    pb.set_defaults(func=cmd_build)

    pr = sub.add_parser(
        "run", parents=[common], help="run a nox session in the image (arguments after --)"
    )
    pr.add_argument(
        "--image",
        default=os.environ.get("HARNESS_CONTAINER_IMAGE", ""),
        help="use this image instead of building one",
    )
    pr.add_argument(
        "--session", default=os.environ.get("HARNESS_CONTAINER_SESSION", DEFAULT_SESSION)
    )
    pr.add_argument(
        "--gpus",
        default=os.environ.get("HARNESS_CONTAINER_GPUS", "all"),
        help="all | none | comma list of GPU indices or UUIDs (default: %(default)s)",
    )
    pr.add_argument("--reports", default="reports", help="host folder mounted as reports/")
    pr.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME",
        help="also pass this variable (needed for tokens: they are never passed by default)",
    )
    pr.add_argument(
        "--user",
        default=os.environ.get("HARNESS_CONTAINER_USER", "caller"),
        help="caller (this uid:gid, default) | image (its non-root user) | UID[:GID]",
    )
    pr.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("HARNESS_CONTAINER_TIMEOUT", "0")) or None,
        help="seconds before the container is stopped (exit 124)",
    )
    pr.add_argument(
        "--mount-repo",
        action="store_true",
        default=_env_flag("HARNESS_CONTAINER_MOUNT_REPO"),
        help="mount the whole checkout at /workspace (for --baseline-rev, which needs git)",
    )
    pr.add_argument("session_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    pr.set_defaults(func=cmd_run)
    return p


def cmd_build(args: argparse.Namespace) -> int:
    root = Path(args.root).resolve()
    tag = ensure_image(connect(), spec_from_args(args, root), rebuild=args.rebuild)
    print(tag)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    root = Path(args.root).resolve()
    session_args = list(args.session_args)
    if session_args[:1] == ["--"]:
        session_args = session_args[1:]
    env = select_env(os.environ, args.env)
    device_requests(args.gpus)  # validate before any slow step
    client = connect()
    image = args.image or ensure_image(client, spec_from_args(args, root), rebuild=args.rebuild)
    spec = RunSpec(
        image=image,
        reports_dir=(root / args.reports)
        if not Path(args.reports).is_absolute()
        else Path(args.reports),
        session=args.session,
        session_args=tuple(session_args),
        gpus=args.gpus,
        env=env,
        user=_user_for(args.user),
        timeout_s=args.timeout,
        repo_root=root if args.mount_repo else None,
    )
    return run_container(client, spec)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ContainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; the container (if any) was removed", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
