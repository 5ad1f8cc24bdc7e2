"""harness/container.py: pure logic with real objects (no daemon needed), then a few
daemon tests that skip with a reason when no docker daemon is reachable (CI's default).

The full build + run on a local base image is `nox -s container_smoke`.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

import pytest

docker = pytest.importorskip("docker", reason="the docker SDK is in the [test] extra")

from harness import container as hc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# --- build context and content hash -------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str], ignore: str = "") -> Path:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if ignore:
        (tmp_path / ".dockerignore").write_text(ignore)
    return tmp_path


def test_context_follows_dockerignore_and_keeps_dockerfile(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {"Dockerfile": "FROM scratch\n", "a/x.py": "x", "a/__pycache__/x.pyc": "c", "b/y": "y"},
        ignore="*\n!Dockerfile\n!a/\n**/__pycache__\n",
    )
    names = [f.arcname for f in hc.collect_context(root)]
    assert names == [".dockerignore", "Dockerfile", "a/x.py"]  # the CLI sends both too


def test_extras_are_added_and_win_over_context_files(tmp_path: Path) -> None:
    root = _tree(tmp_path / "repo", {"Dockerfile": "FROM scratch\n", "ci/image-extra/ca.crt": "x"})
    bundle = tmp_path / "bundle.crt"
    bundle.write_text("CA")
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"PK")
    files = hc.collect_context(root, extras=hc.extras_for(bundle, [wheel]))
    by_name = {f.arcname: f.source for f in files}
    assert by_name["ci/image-extra/ca-certificates.crt"] == bundle
    assert by_name[f"ci/image-extra/wheels/{wheel.name}"] == wheel


def test_missing_dockerfile_or_extra_is_one_clear_error(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a.txt": "a"})
    with pytest.raises(hc.ContainerError, match="no Dockerfile"):
        hc.collect_context(root)
    (root / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(hc.ContainerError, match="not found"):
        hc.collect_context(root, extras=[("ci/x", root / "missing.whl")])


def test_digest_is_stable_and_keys_on_content_mode_and_args(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"Dockerfile": "FROM scratch\n", "k/a.cu": "one"})
    files = hc.collect_context(root)
    base = hc.context_digest(files, {"A": "1"})
    assert base == hc.context_digest(hc.collect_context(root), {"A": "1"})
    assert base != hc.context_digest(files, {"A": "2"})
    assert base != hc.context_digest(files, {})
    (root / "k/a.cu").write_text("two")
    assert base != hc.context_digest(files, {"A": "1"})
    (root / "k/a.cu").write_text("one")
    os.chmod(root / "k/a.cu", 0o755)
    assert base != hc.context_digest(files, {"A": "1"})


def test_digest_ignores_mtime(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"Dockerfile": "FROM scratch\n"})
    files = hc.collect_context(root)
    before = hc.context_digest(files, {})
    os.utime(root / "Dockerfile", (1, 1))
    assert hc.context_digest(files, {}) == before


def test_image_tag_is_a_valid_docker_tag() -> None:
    from docker.utils.build import match_tag

    tag = hc.image_tag("ab" * 32)
    assert tag == "decode-attn-harness:" + "ab" * 8
    assert match_tag(tag)


def test_context_tar_is_reproducible(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"Dockerfile": "FROM scratch\n", "s/run.sh": "#!/bin/sh\n"})
    os.chmod(root / "s/run.sh", 0o755)
    files = hc.collect_context(root)
    blobs = []
    for _ in range(2):
        buf = io.BytesIO()
        hc.write_context(files, buf)
        blobs.append(buf.getvalue())
        os.utime(root / "Dockerfile", (5, 5))
    assert blobs[0] == blobs[1]
    with tarfile.open(fileobj=io.BytesIO(blobs[0])) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["s/run.sh"].mode == 0o755 and members["Dockerfile"].mode == 0o644
    assert {m.mtime for m in members.values()} == {0}


def test_repo_context_has_what_the_image_needs_and_nothing_else() -> None:
    names = {f.arcname for f in hc.collect_context(ROOT)}
    for needed in ("Dockerfile", "pyproject.toml", "noxfile.py", "ci/pyproject_deps.py"):
        assert needed in names
    assert any(n.startswith("harness/") for n in names)
    assert any(n.startswith("kernels/csrc/") for n in names)
    assert any(n.startswith("matrices/") for n in names)
    for leaked in ("tests/", "reports/", ".git/", ".nox/", "kernels/_build/", "__pycache__"):
        assert not any(leaked in n for n in names), leaked
    extra = {n for n in names if n.startswith("ci/image-extra/")}
    assert extra == {"ci/image-extra/.keep"}  # the README may change without a rebuild


# --- GPUs ---------------------------------------------------------------------------------


def test_device_requests_all_none_and_ids() -> None:
    (everything,) = hc.device_requests("all")
    assert everything.count == -1 and everything.capabilities == [["gpu"]]
    assert not everything.device_ids
    assert hc.device_requests("none") == [] and hc.device_requests("") == []
    (some,) = hc.device_requests("0, 3")
    assert some.device_ids == ["0", "3"] and some.capabilities == [["gpu"]]
    assert not some.count
    (uuid,) = hc.device_requests("GPU-8f2c1e4a-0000-1111-2222-333344445555")
    assert uuid.device_ids == ["GPU-8f2c1e4a-0000-1111-2222-333344445555"]


@pytest.mark.parametrize("bad", ["0,,1", "a b", "0;1", ","])
def test_device_requests_reject_bad_lists(bad: str) -> None:
    with pytest.raises(hc.ContainerError, match="--gpus"):
        hc.device_requests(bad)


def test_missing_nvidia_runtime_is_named_only_when_gpus_were_asked() -> None:
    daemon_text = (
        'could not select device driver "" with capabilities: [[gpu]]'  # dockerd's own words
    )
    assert "no NVIDIA runtime" in hc.explain_start_failure(daemon_text, "all")
    assert "--gpus all" in hc.explain_start_failure(daemon_text, "all")
    generic = hc.explain_start_failure('exec: "nox": executable file not found\nmore', "none")
    assert generic == 'the container did not start: exec: "nox": executable file not found'


# --- environment --------------------------------------------------------------------------

CI_ENV = {
    "CI": "true",
    "CI_COMMIT_SHA": "abc123",
    "CI_MERGE_REQUEST_IID": "7",
    "CI_JOB_TOKEN": "glcbt-secret-value",
    "GITLAB_TOKEN": "glpat-secret-value",
    "GITHUB_SHA": "def456",
    "HARNESS_MATRIX": "m.toml",
    "HARNESS_SYSTEM_PYTHON": "0",
    "HARNESS_CONTAINER_GPUS": "all",
    "CUDA_VISIBLE_DEVICES": "2,3",
    "BUILD_NUMBER": "12",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "PATH": "/usr/bin",
    "HOME": "/root",
}


def test_env_allowlist_drops_secrets_and_runner_owned_names() -> None:
    sel = hc.select_env(CI_ENV)
    assert sel.as_dict() == {
        "BUILD_NUMBER": "12",
        "CI": "true",
        "CI_COMMIT_SHA": "abc123",
        "CI_MERGE_REQUEST_IID": "7",
        "GITHUB_SHA": "def456",
        "HARNESS_MATRIX": "m.toml",
    }
    assert sel.secret_names == frozenset()


def test_tokens_pass_only_when_named_and_are_never_described() -> None:
    sel = hc.select_env(CI_ENV, explicit=["GITLAB_TOKEN"])
    assert sel.as_dict()["GITLAB_TOKEN"] == "glpat-secret-value"
    assert sel.secret_names == {"GITLAB_TOKEN"}
    text = sel.describe()
    assert "GITLAB_TOKEN (hidden)" in text and "glpat" not in text
    assert sel.secret_values() == ("glpat-secret-value",)


def test_explicit_unset_variable_is_an_error() -> None:
    with pytest.raises(hc.ContainerError, match="--env NOPE: not set"):
        hc.select_env(CI_ENV, explicit=["NOPE"])


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("CI_JOB_TOKEN", True),
        ("GITHUB_TOKEN", True),
        ("CI_REGISTRY_PASSWORD", True),
        ("SSH_PRIVATE_KEY", True),
        ("API_KEY", True),
        ("CI_JOB_JWT_V2", True),
        ("CI_COMMIT_SHA", False),
        ("HARNESS_MATRIX", False),
        ("KEYBOARD_LAYOUT", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert hc.is_secret_name(name) is secret


def test_streamed_output_masks_secret_values_even_across_chunks() -> None:
    out = io.StringIO()
    printer = hc._LinePrinter(("glpat-secret-value",), out)
    printer.feed(b"token is glpat-sec")
    printer.feed(b"ret-value ok\nsecond line")
    printer.close()
    assert out.getvalue() == f"token is {hc.MASK} ok\nsecond line\n"


# --- run arguments -------------------------------------------------------------------------


def test_container_kwargs_host_network_reports_mount_and_gpus(tmp_path: Path) -> None:
    spec = hc.RunSpec(
        image="decode-attn-harness:0123456789abcdef",
        reports_dir=tmp_path / "reports",
        session_args=("--matrix", "matrices/smoke.toml"),
        gpus="0,1",
        env=hc.select_env(CI_ENV),
        user="1000:1000",
    )
    kw = hc.container_kwargs(spec)
    assert kw["network_mode"] == "host"
    assert kw["command"] == ["nox", "-s", "gpu_matrix", "--", "--matrix", "matrices/smoke.toml"]
    assert kw["volumes"] == {
        str((tmp_path / "reports").resolve()): {"bind": "/workspace/reports", "mode": "rw"}
    }
    assert kw["device_requests"][0].device_ids == ["0", "1"]
    assert kw["user"] == "1000:1000" and kw["environment"]["HOME"] == "/tmp"
    assert kw["environment"]["CI_COMMIT_SHA"] == "abc123"
    assert "CUDA_VISIBLE_DEVICES" not in kw["environment"]


def test_container_kwargs_cpu_image_user_and_repo_mount(tmp_path: Path) -> None:
    spec = hc.RunSpec(image="img", reports_dir=tmp_path / "r", gpus="none", repo_root=tmp_path)
    kw = hc.container_kwargs(spec)
    assert kw["device_requests"] == [] and "user" not in kw
    assert kw["command"] == ["nox", "-s", "gpu_matrix"]
    assert kw["volumes"][str(tmp_path.resolve())] == {"bind": "/workspace", "mode": "rw"}
    assert kw["environment"]["GIT_CONFIG_KEY_0"] == "safe.directory"


# --- build log stream -----------------------------------------------------------------------


def test_build_stream_prints_lines_and_returns_image_id() -> None:
    lines: list[str] = []
    chunks = [
        {"stream": "Step 1/2 : FROM scratch\n"},
        {"status": "Downloading", "progress": "[==>  ]"},
        {"aux": {"ID": "sha256:feed"}},
        {"stream": "Successfully built feed\n"},
    ]
    assert hc.stream_build(chunks, lines.append) == "sha256:feed"
    assert lines == [
        "Step 1/2 : FROM scratch\n",
        "Downloading [==>  ]\n",
        "Successfully built feed\n",
    ]


def test_build_stream_error_chunk_raises_one_line() -> None:
    chunks = iter(
        [
            {"stream": "Step 5/9 : RUN make\n"},
            {
                "error": "The command '/bin/sh -c make' returned a non-zero code: 2",
                "errorDetail": {"code": 2, "message": "The command ... returned 2"},
            },
            {"stream": "never read\n"},
        ]
    )
    with pytest.raises(hc.ContainerError) as info:
        hc.stream_build(chunks, lambda _s: None)
    assert str(info.value).startswith("image build failed: The command '/bin/sh -c make'")
    assert "\n" not in str(info.value)


# --- no daemon: one line, no traceback ------------------------------------------------------


def _no_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    host = f"unix://{tmp_path}/no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    return host


def test_connect_without_daemon_is_one_clear_error(monkeypatch, tmp_path: Path) -> None:
    host = _no_daemon(monkeypatch, tmp_path)
    with pytest.raises(hc.ContainerError) as info:
        hc.connect()
    msg = str(info.value)
    assert msg.startswith(f"cannot reach the docker daemon at {host}") and "\n" not in msg


@pytest.mark.parametrize("command", [["build"], ["run", "--gpus", "none"]])
def test_cli_without_daemon_exits_2_with_one_line(monkeypatch, tmp_path, capsys, command) -> None:
    _no_daemon(monkeypatch, tmp_path)
    assert hc.main([*command, "--root", str(ROOT)]) == hc.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the docker daemon") and err.count("\n") == 1
    assert "Traceback" not in err


def test_cli_rejects_bad_gpus_before_touching_docker(monkeypatch, tmp_path, capsys) -> None:
    _no_daemon(monkeypatch, tmp_path)
    assert hc.main(["run", "--gpus", "x y"]) == hc.EXIT_ERROR
    assert capsys.readouterr().err.startswith("error: --gpus 'x y'")


def test_cli_user_choices() -> None:
    assert hc._user_for("image") is None
    assert hc._user_for("caller") == f"{os.getuid()}:{os.getgid()}"
    assert hc._user_for("1000:100") == "1000:100"
    with pytest.raises(hc.ContainerError, match="--user"):
        hc._user_for("root")


# --- with a daemon (skipped in CI, where dockerd does not run) ------------------------------


@pytest.fixture(scope="module")
def client():
    try:
        return hc.connect()
    except hc.ContainerError as exc:
        pytest.skip(f"no docker daemon reachable ({exc}); nox -s container_smoke covers this path")


def _assert_removed(client, stdout: str) -> None:
    """The container this test started is gone (other workers may run their own)."""
    ids = re.findall(r"removed container (\w+)", stdout)
    assert ids, stdout
    for short_id in ids:
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(short_id)


def test_daemon_build_is_reused_by_content_hash(client, tmp_path: Path, capsys) -> None:
    root = _tree(tmp_path, {"Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n"})
    (root / "hello.txt").write_text("hi")
    spec = hc.BuildSpec(root=root, repo="decode-attn-harness-test")
    try:
        tag = hc.ensure_image(client, spec)
        assert "Successfully" in capsys.readouterr().out
        assert hc.ensure_image(client, spec) == tag
        assert "up to date" in capsys.readouterr().out
        (root / "hello.txt").write_text("changed")
        assert hc.ensure_image(client, spec) != tag
    finally:
        for image in client.images.list(name="decode-attn-harness-test"):
            client.images.remove(image.id, force=True)


def test_daemon_build_failure_is_one_line(client, tmp_path: Path) -> None:
    root = _tree(tmp_path, {"Dockerfile": "FROM scratch\nCOPY missing.txt /x\n"})
    with pytest.raises(hc.ContainerError, match=r"^image build failed: "):
        hc.ensure_image(client, hc.BuildSpec(root=root, repo="decode-attn-harness-test"))


def _image_with_shell(client) -> str:
    for ref in ("localbase:bookworm", *(t for i in client.images.list() for t in i.tags)):
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            continue
        return ref
    pytest.skip("no local image to start a container from (nox -s container_smoke makes one)")


def test_daemon_gpu_request_without_nvidia_runtime(client, tmp_path: Path, capsys) -> None:
    if "nvidia" in (client.info().get("Runtimes") or {}):
        pytest.skip("this daemon has the NVIDIA runtime")
    spec = hc.RunSpec(image=_image_with_shell(client), reports_dir=tmp_path / "r", gpus="all")
    with pytest.raises(hc.ContainerError, match="no NVIDIA runtime"):
        hc.run_container(client, spec)
    _assert_removed(client, capsys.readouterr().out)


def test_daemon_timeout_stops_and_removes_the_container(client, tmp_path: Path, capsys) -> None:
    images = [t for i in client.images.list(name=hc.IMAGE_REPO) for t in i.tags]
    if not images:
        pytest.skip("no decode-attn-harness image (nox -s container_smoke builds one)")
    spec = hc.RunSpec(
        image=images[0], reports_dir=tmp_path / "r", gpus="none", user=None, timeout_s=3
    )
    (tmp_path / "r").mkdir()
    (tmp_path / "r").chmod(0o1777)
    assert hc.run_container(client, spec, out=io.StringIO()) == hc.EXIT_TIMEOUT
    _assert_removed(client, capsys.readouterr().out)


def test_daemon_unknown_image_is_one_line(client, tmp_path: Path) -> None:
    spec = hc.RunSpec(image="decode-attn-harness:does-not-exist", reports_dir=tmp_path / "r")
    with pytest.raises(
        hc.ContainerError, match="image decode-attn-harness:does-not-exist not found"
    ):
        hc.run_container(client, spec)
