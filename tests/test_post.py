"""The PR bot against a small real HTTP server on 127.0.0.1 that implements the few
GitHub and GitLab endpoints it uses (list with pagination, create, update, /user) and
records every request. Nothing here talks to any other address."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.report import generate, post
from harness.report.artifacts import artifact_base_from_env
from harness.report.ci_context import ContextError, Overrides, Token, detect_target
from harness.report.forge_http import ApiError, Http, RetryPolicy
from harness.results import ResultRow, ResultWriter

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "tok-Sup3rSecret-0042"  # what the bot's token looks like to the server
OTHER_TOKEN = "tok-someone-else-77"
BOT = {"id": 501, "login": "harness-bot", "username": "harness-bot"}
HUMAN = {"id": 7, "login": "alice", "username": "alice"}
MARK = "<!-- decode-attn-harness:report -->"
FAST = RetryPolicy(attempts=4, base_s=0.001, max_wait_s=0.01)

# Every variable the bot reads: cleared so the machine running the tests cannot leak in.
CONTEXT_VARS = (
    "GITHUB_ACTIONS",
    "GITHUB_REPOSITORY",
    "GITHUB_API_URL",
    "GITHUB_REF",
    "GITHUB_EVENT_PATH",
    "GITHUB_RUN_ID",
    "GITHUB_SERVER_URL",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GITLAB_CI",
    "GITLAB_TOKEN",
    "CI_JOB_TOKEN",
    "CI_API_V4_URL",
    "CI_PROJECT_ID",
    "CI_MERGE_REQUEST_IID",
    "CI_JOB_URL",
    "JENKINS_URL",
    "BUILD_URL",
    "CHANGE_ID",
    "CHANGE_URL",
    "HARNESS_POST_PROVIDER",
    "HARNESS_REPO",
    "HARNESS_PROJECT_ID",
    "HARNESS_PR",
    "HARNESS_API_URL",
    "HARNESS_ARTIFACT_URL",
    "HARNESS_POST_KEY",
)


@dataclass
class Fault:
    """Answer the next matching request with `status` instead of serving it."""

    method: str
    status: int
    body: str = '{"message": "injected"}'
    headers: dict[str, str] = field(default_factory=dict)
    serve_anyway: bool = False  # do the work, then answer with the fault (a lost reply)


Answer = tuple[int, Any, dict[str, str]]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class ForgeState:
    """Comments of one GitHub PR (o/r#5) and one GitLab MR (project 42, !9)."""

    PAGE = 2  # the server caps pages at 2 items, whatever per_page asks, to force paging

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gh: list[dict[str, Any]] = []
        self.gl: list[dict[str, Any]] = []
        self.next_id = 1000
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.users = {TOKEN: BOT, OTHER_TOKEN: HUMAN}

    def add(self, forge: str, body: str, who: dict[str, Any], system: bool = False) -> int:
        self.next_id += 1
        if forge == "github":
            self.gh.append({"id": self.next_id, "body": body, "user": dict(who)})
        else:
            item = {"id": self.next_id, "body": body, "author": dict(who), "system": system}
            self.gl.append(item)
        return self.next_id


class Handler(BaseHTTPRequestHandler):
    state: ForgeState

    def log_message(self, *args: Any) -> None:  # keep pytest's output clean
        pass

    def _send(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        raw = (data if isinstance(data, str) else json.dumps(data)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _token(self) -> str:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :]
        return self.headers.get("PRIVATE-TOKEN") or self.headers.get("JOB-TOKEN") or ""

    def _handle(self) -> None:
        st = self.state
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        headers = {k.lower(): v for k, v in self.headers.items()}
        with st.lock:
            st.requests.append(Recorded(self.command, parts.path, query, headers, body))
            fault = next((f for f in st.faults if f.method in (self.command, "*")), None)
            if fault:
                st.faults.remove(fault)
            token = self._token()
            if fault is None or fault.serve_anyway:
                answer = self._route(parts.path, query, body, token)
            if fault is not None:
                answer = (fault.status, fault.body.replace("{token}", token), fault.headers)
        self._send(*answer)

    def _route(self, path: str, query: dict[str, str], body: Any, token: str) -> Answer:
        st = self.state
        me = st.users.get(token)
        if me is None:
            return 401, {"message": f"Bad credentials: {token!r} is not valid"}, {}
        if path in ("/gh/user", "/gl/api/v4/user"):
            return 200, me, {}
        if path == "/gh/repos/o/r/issues/5/comments":
            return self._list_or_create(st.gh, "user", me, query, body)
        if path == "/gl/api/v4/projects/42/merge_requests/9/notes":
            return self._list_or_create(st.gl, "author", me, query, body)
        for items, prefix in (
            (st.gh, "/gh/repos/o/r/issues/comments/"),
            (st.gl, "/gl/api/v4/projects/42/merge_requests/9/notes/"),
        ):
            if path.startswith(prefix) and self.command in ("PATCH", "PUT"):
                item = next((c for c in items if str(c["id"]) == path[len(prefix) :]), None)
                if item is None:
                    return 404, {"message": "Not Found"}, {}
                item["body"] = body["body"]
                return 200, item, {}
        return 404, {"message": "Not Found"}, {}

    def _list_or_create(self, items, who_key, me, query, body) -> Answer:
        if self.command == "POST":
            self.state.next_id += 1
            item = {"id": self.state.next_id, "body": body["body"], who_key: dict(me)}
            if who_key == "author":
                item["system"] = False
            items.append(item)
            return 201, item, {}
        size = min(int(query.get("per_page", 20)), ForgeState.PAGE)
        page = int(query.get("page", 1))
        chunk = items[(page - 1) * size : page * size]
        headers = {}
        if page * size < len(items):
            nxt = dict(query, page=str(page + 1))
            url = f"http://{self.headers['Host']}{urllib.parse.urlsplit(self.path).path}"
            headers["Link"] = f'<{url}?{urllib.parse.urlencode(nxt)}>; rel="next"'
            if who_key == "author":
                headers["X-Next-Page"] = str(page + 1)
        return 200, chunk, headers

    do_GET = do_POST = do_PATCH = do_PUT = _handle


@pytest.fixture
def forge() -> Iterator[tuple[ForgeState, str]]:
    state = ForgeState()
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONTEXT_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(post, "DEFAULT_RETRY", FAST)


@pytest.fixture
def summary(tmp_path: Path) -> Path:
    path = tmp_path / "reports" / "summary.md"
    path.parent.mkdir()
    path.write_text("# Decode-attention kernel report\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    return path


def gh_args(base: str, summary: Path, *extra: str) -> list[str]:
    target = ["--provider", "github", "--repo", "o/r", "--pr", "5", "--api-url", f"{base}/gh"]
    return ["post", "--summary", str(summary), *target, *extra]


def gl_args(base: str, summary: Path, *extra: str) -> list[str]:
    target = ["--provider", "gitlab", "--project-id", "42", "--mr", "9"]
    return ["post", "--summary", str(summary), *target, "--api-url", f"{base}/gl/api/v4", *extra]


def writes(state: ForgeState) -> list[Recorded]:
    return [r for r in state.requests if r.method in ("POST", "PATCH", "PUT")]


# --- create, then update the same comment -------------------------------------------


def test_github_create_then_update_edits_the_same_comment(
    forge, summary, monkeypatch, capsys
) -> None:
    state, base = forge
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    assert main(gh_args(base, summary)) == 0
    assert len(state.gh) == 1
    first = state.gh[0]
    assert first["body"].startswith(MARK + "\n# Decode-attention kernel report")
    assert "created comment" in capsys.readouterr().out

    summary.write_text("# Decode-attention kernel report\n\nsecond run\n")
    assert main(gh_args(base, summary)) == 0
    assert len(state.gh) == 1  # still one comment...
    assert state.gh[0]["id"] == first["id"]  # ...the same one...
    assert state.gh[0]["body"] == MARK + "\n# Decode-attention kernel report\n\nsecond run\n"
    patch = writes(state)[-1]
    assert (patch.method, patch.path) == ("PATCH", f"/gh/repos/o/r/issues/comments/{first['id']}")
    assert patch.headers["authorization"] == f"Bearer {TOKEN}"
    assert f"updated comment {first['id']}" in capsys.readouterr().out


def test_gitlab_create_then_update_with_put(forge, summary, monkeypatch) -> None:
    state, base = forge
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    assert main(gl_args(base, summary)) == 0
    summary.write_text("v2\n")
    assert main(gl_args(base, summary)) == 0
    assert [n["body"] for n in state.gl] == [MARK + "\nv2\n"]
    assert [(r.method, r.path) for r in writes(state)] == [
        ("POST", "/gl/api/v4/projects/42/merge_requests/9/notes"),
        ("PUT", f"/gl/api/v4/projects/42/merge_requests/9/notes/{state.gl[0]['id']}"),
    ]
    assert writes(state)[0].headers["private-token"] == TOKEN


def test_a_key_per_job_keeps_one_comment_per_key(forge, summary, monkeypatch) -> None:
    state, base = forge
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    assert main(gh_args(base, summary, "--key", "h100")) == 0
    assert main(gh_args(base, summary, "--key", "a100")) == 0
    assert main(gh_args(base, summary, "--key", "h100")) == 0
    assert len(state.gh) == 2
    assert [c["body"].splitlines()[0] for c in state.gh] == [
        "<!-- decode-attn-harness:report key=h100 -->",
        "<!-- decode-attn-harness:report key=a100 -->",
    ]
    assert main(gh_args(base, summary, "--key", "bad key-->")) == 2


# --- whose comment, which notes, which page -----------------------------------------


def test_ignores_someone_elses_comment_with_the_marker(forge, summary, monkeypatch) -> None:
    state, base = forge
    quoted = state.add("github", f"{MARK}\nquoted our report in a review reply", HUMAN)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    assert main(gh_args(base, summary)) == 0
    assert len(state.gh) == 2
    assert state.gh[0]["body"].endswith("quoted our report in a review reply")  # untouched
    assert state.gh[1]["user"]["login"] == "harness-bot"
    assert all(r.path != f"/gh/repos/o/r/issues/comments/{quoted}" for r in state.requests)


def test_gitlab_skips_system_notes(forge, summary, monkeypatch) -> None:
    state, base = forge
    # A system note by the bot's own user that happens to carry the marker text.
    state.add("gitlab", f"{MARK}\nadded 1 commit", BOT, system=True)
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    assert main(gl_args(base, summary)) == 0
    assert len(state.gl) == 2
    assert state.gl[0]["body"].endswith("added 1 commit")
    assert [r.method for r in writes(state)] == ["POST"]


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_finds_the_marker_comment_on_a_later_page(forge, summary, monkeypatch, provider) -> None:
    state, base = forge
    for i in range(3):  # page 1 (2 items) and the first item of page 2
        state.add(provider, f"comment {i}", HUMAN)
    ours = state.add(provider, f"{MARK}\nold report", BOT)
    state.add(provider, "later comment", HUMAN)
    monkeypatch.setenv("GITHUB_TOKEN" if provider == "github" else "GITLAB_TOKEN", TOKEN)
    args = gh_args(base, summary) if provider == "github" else gl_args(base, summary)
    assert main(args) == 0
    items = state.gh if provider == "github" else state.gl
    assert len(items) == 5
    assert next(c for c in items if c["id"] == ours)["body"].startswith(MARK + "\n# Decode")
    pages = [r.query.get("page", "1") for r in state.requests if r.method == "GET"]
    assert pages[1:] == ["1", "2", "3"]  # after /user: three pages of two
    assert [r.method for r in writes(state)] == ["PATCH" if provider == "github" else "PUT"]


# --- tokens: missing, rejected, echoed back -----------------------------------------


def test_missing_token_is_one_line_and_exit_2(forge, summary, capsys) -> None:
    state, base = forge
    assert main(gh_args(base, summary)) == 2
    err = capsys.readouterr().err
    assert err == "error: no token to post on GitHub PR o/r#5: set GITHUB_TOKEN or GH_TOKEN\n"
    assert state.requests == []


def test_rejected_token_is_one_line_and_exit_3(forge, summary, monkeypatch, capsys) -> None:
    state, base = forge
    monkeypatch.setenv("GITLAB_TOKEN", "tok-wrong-1234")
    assert main(gl_args(base, summary)) == 3
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: GitLab: GET /gl/api/v4/user: HTTP 401")
    assert "token from GITLAB_TOKEN rejected" in err
    assert "tok-wrong-1234" not in out + err  # the server echoed it back; we did not
    assert "***" in err
    assert len(state.requests) == 1  # a 401 is not retried


def test_actions_token_without_user_endpoint_matches_the_actions_bot(
    forge, summary, monkeypatch
) -> None:
    """An Actions GITHUB_TOKEN gets 403 from /user; its comments are github-actions[bot]'s."""
    state, base = forge
    actions_bot = {"id": 41898282, "login": "github-actions[bot]"}
    state.users["ghs_actions"] = actions_bot
    ours = state.add("github", f"{MARK}\nold", actions_bot)
    state.faults.append(Fault("GET", 403, '{"message": "Resource not accessible by integration"}'))
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_actions")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert main(gh_args(base, summary)) == 0
    assert [c["id"] for c in state.gh] == [ours] and state.gh[0]["body"] != f"{MARK}\nold"
    monkeypatch.delenv("GITHUB_ACTIONS")  # outside Actions the same 403 is a rejection
    state.faults.append(Fault("GET", 403, '{"message": "Forbidden"}'))
    assert main(gh_args(base, summary)) == 3


def test_job_token_uses_the_job_token_header_and_explains_a_rejection(
    forge, summary, monkeypatch, capsys
) -> None:
    state, base = forge
    monkeypatch.setenv("CI_JOB_TOKEN", "job-tok-999")
    state.faults.append(Fault("GET", 403, '{"message": "403 Forbidden"}'))
    assert main(gl_args(base, summary)) == 3
    assert state.requests[0].headers["job-token"] == "job-tok-999"
    assert "GitLab job tokens cannot use the notes API" in capsys.readouterr().err


def test_token_never_leaks_even_when_the_server_echoes_it(
    forge, summary, monkeypatch, capsys, caplog
) -> None:
    state, base = forge
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    echo = '{"message": "Validation Failed for token {token}", "documentation_url": "x"}'
    state.faults += [Fault("POST", 422, echo)]
    assert main(gh_args(base, summary)) == 3
    # and again through retries that all fail with the token in a 5xx body
    state.faults += [Fault("GET", 503, "upstream said: Bearer {token}")] * 4
    assert main(gh_args(base, summary)) == 3
    out, err = capsys.readouterr()
    assert "HTTP 422 Validation Failed for token ***" in err
    assert "HTTP 503 upstream said: Bearer ***" in out + err
    for text in (out, err, caplog.text):
        assert TOKEN not in text
        assert urllib.parse.quote(TOKEN) not in text
    # the exception itself, as a caller of the library would see it
    http = Http(f"{base}/gh", Token("GITHUB_TOKEN", TOKEN).headers, (TOKEN,), retry=FAST)
    state.faults.append(Fault("GET", 400, "bad request from {token}"))
    with pytest.raises(ApiError) as info:
        http.request("GET", http.url("/user"))
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert TOKEN not in repr(Token("GITHUB_TOKEN", TOKEN))


def test_token_never_leaks_from_a_real_process(forge, summary) -> None:
    """The same in a fresh `python -m harness post` process: stdout, stderr, exit code."""
    _, base = forge
    env = {k: v for k, v in os.environ.items() if k not in CONTEXT_VARS}
    env |= {"GITHUB_TOKEN": "tok-wrong-5678", "NO_PROXY": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "harness", *gh_args(base, summary)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: GitHub: GET /gh/user: HTTP 401 Bad credentials: '***'")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "tok-wrong-5678" not in proc.stdout + proc.stderr


# --- retries -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503, 403])
def test_429_and_5xx_are_retried_then_succeed(forge, summary, monkeypatch, capsys, status) -> None:
    """403 only as GitHub's (secondary) rate limit: with Retry-After / remaining 0."""
    state, base = forge
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    limit = {"Retry-After": "1", "x-ratelimit-remaining": "0"}
    state.faults += [Fault("GET", status, headers=limit)] * 2
    assert main(gh_args(base, summary)) == 0
    assert len(state.gh) == 1
    assert [r.path for r in state.requests[:3]] == ["/gh/user"] * 3
    assert capsys.readouterr().out.count(f"HTTP {status}") == 2


def test_a_create_that_failed_with_5xx_is_not_duplicated(forge, summary, monkeypatch) -> None:
    """The server created the comment but answered 502: the bot looks for its marker
    again before retrying, finds it, and edits it instead of posting a second one."""
    state, base = forge
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    state.faults.append(Fault("POST", 502, serve_anyway=True))
    assert main(gh_args(base, summary)) == 0
    assert len(state.gh) == 1
    assert [r.method for r in writes(state)] == ["POST", "PATCH"]


def test_a_failed_create_is_retried_after_looking_again(forge, summary, monkeypatch) -> None:
    state, base = forge
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    state.faults.append(Fault("POST", 502))
    assert main(gh_args(base, summary)) == 0
    assert len(state.gh) == 1
    methods = [r.method for r in state.requests]
    assert methods == ["GET", "GET", "POST", "GET", "POST"]  # /user, list, 502, re-list, create


def test_gives_up_after_the_bounded_retries(forge, summary, monkeypatch, capsys) -> None:
    state, base = forge
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    state.faults += [Fault("*", 500)] * 10
    assert main(gh_args(base, summary)) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: GitHub: GET /gh/user: HTTP 500 injected (gave up after 4 tries)")
    assert len(state.requests) == FAST.attempts


def test_unreachable_forge_is_exit_3(summary, monkeypatch, capsys) -> None:
    import socket

    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    assert main(gh_args(f"http://127.0.0.1:{port}", summary)) == 3
    err = capsys.readouterr().err
    assert "unreachable" in err and "gave up after 4 tries" in err


def test_backoff_is_exponential_and_honours_retry_after(forge) -> None:
    state, base = forge
    slept: list[float] = []
    policy = RetryPolicy(attempts=5, base_s=0.5, max_wait_s=4.0)
    http = Http(
        f"{base}/gh", Token("GITHUB_TOKEN", TOKEN).headers, (TOKEN,), policy, sleep=slept.append
    )
    state.faults += [
        Fault("GET", 503),
        Fault("GET", 502),
        Fault("GET", 429, headers={"Retry-After": "3"}),
        Fault("GET", 429, headers={"Retry-After": "120"}),
    ]
    assert http.request("GET", http.url("/user")).data["login"] == "harness-bot"
    assert slept == [0.5, 1.0, 3.0, 4.0]  # 2**k backoff; Retry-After wins, capped


def test_pagination_never_sends_the_token_to_another_host(forge) -> None:
    state, base = forge
    http = Http(f"{base}/gh", Token("GITHUB_TOKEN", TOKEN).headers, (TOKEN,), FAST)
    with pytest.raises(ApiError, match="refusing to send the token"):
        http.request("GET", "http://127.0.0.2:1/gh/user")
    assert state.requests == []


# --- size -----------------------------------------------------------------------------


def big_summary(chars: int) -> str:
    rows = "\n".join(f"| case-{i:06d} | 0.057 | 0.046 | 1.24 |" for i in range(chars // 36))
    return (
        "# Decode-attention kernel report\n\n**Commit** `abc`\n\n"
        "```mermaid\nxychart-beta\n    bar [1.2]\n```\n\n"
        "<details><summary>many cases</summary>\n\n"
        "| test case | median_time_ms | median_time_ms (opt) | speedup |\n|---|---|---|---|\n"
        f"{rows}\n\n</details>\n"
    )


def test_github_body_over_the_limit_is_cut_with_a_linked_note(forge, summary, monkeypatch) -> None:
    state, base = forge
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    summary.write_text(big_summary(80_000))
    url = "https://ci.example/job/1/artifact/reports/"
    assert main(gh_args(base, summary, "--artifact-url", url)) == 0
    body = state.gh[0]["body"]
    assert len(body) <= post.LIMITS["github"]
    assert body.startswith(MARK + "\n# Decode-attention kernel report")
    assert "Cut to fit GitHub's 65,536-character comment limit" in body
    assert f"the full report is [summary.md]({url}summary.md)" in body
    assert body.count("<details>") == body.count("</details>")
    assert body.count("```") % 2 == 0


def test_gitlab_posts_the_unfolded_report_when_it_fits(forge, tmp_path, monkeypatch) -> None:
    """generate() folds summary.md to GitHub's limit and writes summary-full.md; GitLab
    allows 1,000,000 characters, so the bot posts the full page there."""
    state, base = forge
    writer = ResultWriter(tmp_path / "res" / "w.jsonl")
    for batch in range(1, 41):
        for backend in ("torch_baseline", "torch_grouped"):
            writer.write(_row(batch, backend, 2.0 if backend == "torch_baseline" else 1.0))
    out = generate([tmp_path / "res"], tmp_path / "reports", max_chars=3_000, png=False)
    assert out.full_markdown_path is not None
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    assert main(gl_args(base, out.markdown_path)) == 0
    body = state.gl[0]["body"]
    assert body == MARK + "\n" + out.full_markdown_path.read_text()
    assert "left out to fit" not in body

    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    assert main(gh_args(base, out.markdown_path)) == 0  # it fits GitHub's limit too
    assert state.gh[0]["body"] == body

    # A full page over GitHub's limit: GitHub gets the folded summary, GitLab the full one.
    out.full_markdown_path.write_text(big_summary(100_000))
    assert main(gh_args(base, out.markdown_path)) == 0
    assert state.gh[0]["body"] == MARK + "\n" + out.markdown_path.read_text()
    assert "**Folded**" in state.gh[0]["body"]
    assert main(gl_args(base, out.markdown_path)) == 0
    assert state.gl[0]["body"] == MARK + "\n" + big_summary(100_000)


def _row(batch: int, backend: str, median: float) -> ResultRow:
    return ResultRow(
        run_id="r",
        matrix="m",
        case_id=f"Qwen3-480B-fp8_e4m3-batchSize{batch}-seqLenQ2",
        case={"batch": batch, "q_len": 2},
        backend=backend,
        role=backend.split("_", 1)[1],
        status="passed",
        device={"kind": "cpu", "name": "Test CPU"},
        timing={"median_ms": median, "ci_low_ms": median * 0.9, "ci_high_ms": median * 1.1, "n": 9},
        env={"git_commit": "abc"},
    )


def test_folded_report_links_the_full_page_as_an_artifact(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path / "res" / "w.jsonl")
    for batch in range(1, 41):
        for backend in ("torch_baseline", "torch_grouped"):
            writer.write(_row(batch, backend, 2.0 if backend == "torch_baseline" else 1.0))
    url = "https://gitlab.example/g/p/-/jobs/5/artifacts/file/reports/"
    out = generate(
        [tmp_path / "res"], tmp_path / "reports", max_chars=3_000, png=False, artifact_url=url
    )
    text = out.markdown_path.read_text()
    assert f"the full report is [summary-full.md]({url}summary-full.md) in the CI" in text
    assert f"see [summary-full.md]({url}summary-full.md)" in text


def test_fit_body_units() -> None:
    body, note = post.fit_body(
        "x\n" * 10, mark=MARK, limit=1000, forge_name="GitHub", artifact="`a`"
    )
    assert body == MARK + "\n" + "x\n" * 10 and note == ""
    text = "```\n" + "line\n" * 500 + "```\n"
    body, note = post.fit_body(text, mark=MARK, limit=400, forge_name="GitHub", artifact="`a`")
    assert len(body) <= 400 and body.count("```") % 2 == 0 and note.startswith("cut at")


# --- dry run, context -----------------------------------------------------------------


def test_dry_run_makes_no_request(forge, summary, monkeypatch, capsys) -> None:
    state, base = forge
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    assert main(gh_args(base, summary, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert state.requests == []
    assert f"target: GitHub PR o/r#5 via {base}/gh (context: flags)" in out
    assert "token: GITHUB_TOKEN is set" in out
    assert MARK in out and "| 1 | 2 |" in out
    assert TOKEN not in out


def test_dry_run_without_context_or_token_still_prints(summary, capsys) -> None:
    assert main(["post", "--summary", str(summary), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "target: not resolved (cannot tell where to post" in out
    assert "token: none found" in out and "# Decode-attention kernel report" in out


def test_missing_context_and_summary_are_exit_2(summary, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    assert main(["post", "--summary", str(summary)]) == 2
    assert capsys.readouterr().err.startswith("error: cannot tell where to post")
    assert main(["post", "--summary", str(tmp_path / "none.md"), "--provider", "github"]) == 2
    assert "no such summary" in capsys.readouterr().err


def test_context_from_github_actions(tmp_path: Path) -> None:
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "acme/kernels",
        "GITHUB_API_URL": "https://ghe.example/api/v3",
        "GITHUB_REF": "refs/pull/42/merge",
    }
    t = detect_target(env)
    assert (t.provider, t.api_url, t.repo, t.number) == (
        "github",
        "https://ghe.example/api/v3",
        "acme/kernels",
        42,
    )
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 17}}))
    t = detect_target({**env, "GITHUB_REF": "refs/heads/x", "GITHUB_EVENT_PATH": str(event)})
    assert t.number == 17 and t.source == "GitHub Actions"
    with pytest.raises(ContextError, match=r"--pr N .*GITHUB_REF=refs/heads/main"):
        detect_target({**env, "GITHUB_REF": "refs/heads/main"})
    assert detect_target(env, Overrides(number=3, repo="a/b")).number == 3  # flags win


def test_context_from_gitlab_ci() -> None:
    env = {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": "https://gitlab.example/api/v4",
        "CI_PROJECT_ID": "1234",
        "CI_MERGE_REQUEST_IID": "9",
    }
    t = detect_target(env)
    assert (t.provider, t.api_url, t.repo, t.number) == (
        "gitlab",
        "https://gitlab.example/api/v4",
        "1234",
        9,
    )
    with pytest.raises(ContextError, match="CI_MERGE_REQUEST_IID only in merge-request"):
        detect_target({k: v for k, v in env.items() if k != "CI_MERGE_REQUEST_IID"})


def test_context_from_jenkins() -> None:
    jenkins = {"JENKINS_URL": "https://ci.example/", "CHANGE_ID": "12"}
    t = detect_target(
        {
            **jenkins,
            "HARNESS_POST_PROVIDER": "gitlab",
            "HARNESS_REPO": "gpu/kernels",
            "HARNESS_API_URL": "https://gitlab.example/api/v4",
        }
    )
    assert (t.provider, t.repo, t.number) == ("gitlab", "gpu%2Fkernels", 12)
    assert t.source == "Jenkins (HARNESS_POST_PROVIDER)"
    t = detect_target({**jenkins, "CHANGE_URL": "https://github.com/acme/kernels/pull/12"})
    assert (t.provider, t.api_url, t.repo, t.number) == (
        "github",
        "https://api.github.com",
        "acme/kernels",
        12,
    )
    t = detect_target(
        {**jenkins, "CHANGE_URL": "https://gitlab.example/gpu/sub/kernels/-/merge_requests/12"}
    )
    assert (t.provider, t.api_url, t.repo) == (
        "gitlab",
        "https://gitlab.example/api/v4",
        "gpu%2Fsub%2Fkernels",
    )
    with pytest.raises(ContextError, match="HARNESS_POST_PROVIDER"):
        detect_target(jenkins)


def test_artifact_url_from_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert (
        artifact_base_from_env(
            "reports", {"GITLAB_CI": "true", "CI_JOB_URL": "https://gl.example/g/p/-/jobs/5"}
        )
        == "https://gl.example/g/p/-/jobs/5/artifacts/file/reports/"
    )
    jenkins = {"JENKINS_URL": "https://ci/", "BUILD_URL": "https://ci/job/x/PR-3/7/"}
    assert artifact_base_from_env("reports", jenkins) == "https://ci/job/x/PR-3/7/artifact/reports/"
    gha = {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "99", "GITHUB_REPOSITORY": "a/b"}
    assert artifact_base_from_env("reports", gha) == "https://github.com/a/b/actions/runs/99"
    assert artifact_base_from_env("reports", {"HARNESS_ARTIFACT_URL": "https://x/"}) == "https://x/"
    gitlab = {"GITLAB_CI": "true", "CI_JOB_URL": "https://gl/j/5", "CI_PROJECT_DIR": str(ROOT)}
    assert artifact_base_from_env(ROOT / "reports" / "h100", gitlab).endswith("file/reports/h100/")
    assert artifact_base_from_env("/", gitlab) == ""  # outside the checkout: no wrong link
    assert artifact_base_from_env("reports", {}) == ""
