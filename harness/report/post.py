"""The PR bot: posts reports/summary.md as ONE comment on a GitHub PR or GitLab MR and, on
later runs, edits that same comment instead of adding another.

The comment is found by a hidden marker (`<!-- decode-attn-harness:report -->`, or with a
key per job) AND by its author being the token's own user, so a quoted or copied marker
in someone else's comment is never overwritten. Exit codes: 0 posted/updated (or dry
run), 2 usage/config error (no token, no PR context, no summary), 3 the forge rejected
the request or could not be reached after the retries.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.report.artifacts import artifact_base_from_env, artifact_ref
from harness.report.ci_context import (
    TOKEN_VARS,
    ContextError,
    Overrides,
    Target,
    Token,
    detect_target,
    find_token,
)
from harness.report.forge_http import ApiError, Http, RetryPolicy, redact

EXIT_OK, EXIT_CONFIG, EXIT_API = 0, 2, 3
MARKER_NAME = "decode-attn-harness:report"
LIMITS = {"github": 65_536, "gitlab": 1_000_000}
FORGE_NAMES = {"github": "GitHub", "gitlab": "GitLab"}
FULL_NAME = "summary-full.md"
ACTIONS_BOT = "github-actions[bot]"
DEFAULT_RETRY = RetryPolicy()

EXIT_CODES_TEXT = """exit codes:
  0  comment created or updated (or --dry-run)
  2  usage/config error: no token, no PR/MR context, no summary file
  3  the forge rejected a request (401/403 token, 404, 422, ...) or was unreachable
     after the retries (429 and 5xx are retried with exponential backoff)

tokens (environment only, never printed):
  GitHub: GITHUB_TOKEN, else GH_TOKEN
  GitLab: GITLAB_TOKEN (PRIVATE-TOKEN header), else CI_JOB_TOKEN (JOB-TOKEN header)"""


def marker(key: str = "") -> str:
    """The hidden HTML comment that identifies our comment (one per `key`)."""
    if key and not re.fullmatch(r"[A-Za-z0-9._-]+", key):
        raise ContextError(f"--key {key!r}: use letters, digits, '.', '_' or '-' only")
    return f"<!-- {MARKER_NAME} key={key} -->" if key else f"<!-- {MARKER_NAME} -->"


@dataclass(frozen=True)
class Identity:
    """The token's own user: GitHub compares logins (an Actions token has no /user),
    GitLab compares ids."""

    login: str
    id: int | None = None


@dataclass(frozen=True)
class Comment:
    id: int
    body: str
    author_login: str
    author_id: int | None
    system: bool = False

    def by(self, me: Identity) -> bool:
        if me.id is not None and self.author_id is not None:
            return me.id == self.author_id
        return self.author_login.lower() == me.login.lower()


class Forge(Protocol):
    http: Http
    target: Target

    def me(self) -> Identity: ...
    def comments(self) -> Iterator[Comment]: ...
    def create(self, body: str, *, retries: bool = True) -> int: ...
    def update(self, comment_id: int, body: str) -> None: ...


def _author(obj: dict[str, Any], key: str) -> tuple[str, int | None]:
    who = obj.get(key) if isinstance(obj.get(key), dict) else {}
    ident = who.get("id")
    return str(who.get("login") or who.get("username") or ""), (
        ident if isinstance(ident, int) else None
    )


@dataclass
class GitHubForge:
    """Issue comments of a PR (a PR is an issue): list, create, edit."""

    http: Http
    target: Target
    in_actions: bool = False

    @property
    def _issue(self) -> str:
        return f"/repos/{self.target.repo}/issues/{self.target.number}"

    def me(self) -> Identity:
        try:
            data = self.http.request("GET", self.http.url("/user")).data
        except ApiError as exc:
            # An Actions GITHUB_TOKEN is an app installation token: /user answers 403
            # "Resource not accessible by integration", and its comments are by this user.
            if exc.status == 403 and self.in_actions:
                return Identity(ACTIONS_BOT)
            raise
        login, ident = _author({"u": data}, "u") if isinstance(data, dict) else ("", None)
        if not login:
            raise ApiError("GET /user: the answer has no login")
        return Identity(login, ident)

    def comments(self) -> Iterator[Comment]:
        url = self.http.url(f"{self._issue}/comments", {"per_page": 100})
        for c in self.http.paginate(url):
            login, ident = _author(c, "user")
            if isinstance(c.get("id"), int):
                yield Comment(c["id"], str(c.get("body") or ""), login, ident)

    def create(self, body: str, *, retries: bool = True) -> int:
        url = self.http.url(f"{self._issue}/comments")
        data = self.http.request("POST", url, {"body": body}, retries=retries).data
        return int(data["id"]) if isinstance(data, dict) and "id" in data else 0

    def update(self, comment_id: int, body: str) -> None:
        url = self.http.url(f"/repos/{self.target.repo}/issues/comments/{comment_id}")
        self.http.request("PATCH", url, {"body": body})


@dataclass
class GitLabForge:
    """Notes of a merge request: list (skipping system notes), create, edit."""

    http: Http
    target: Target

    @property
    def _notes(self) -> str:
        return f"/projects/{self.target.repo}/merge_requests/{self.target.number}/notes"

    def me(self) -> Identity:
        data = self.http.request("GET", self.http.url("/user")).data
        login, ident = _author({"u": data}, "u") if isinstance(data, dict) else ("", None)
        if ident is None and not login:
            raise ApiError("GET /user: the answer has no id")
        return Identity(login, ident)

    def comments(self) -> Iterator[Comment]:
        query = {"per_page": 100, "sort": "asc", "order_by": "created_at"}
        for n in self.http.paginate(self.http.url(self._notes, query)):
            login, ident = _author(n, "author")
            if isinstance(n.get("id"), int):
                yield Comment(
                    n["id"], str(n.get("body") or ""), login, ident, n.get("system") is True
                )

    def create(self, body: str, *, retries: bool = True) -> int:
        data = self.http.request(
            "POST", self.http.url(self._notes), {"body": body}, retries=retries
        ).data
        return int(data["id"]) if isinstance(data, dict) and "id" in data else 0

    def update(self, comment_id: int, body: str) -> None:
        self.http.request("PUT", self.http.url(f"{self._notes}/{comment_id}"), {"body": body})


@dataclass(frozen=True)
class Outcome:
    action: str  # "created" | "updated"
    comment_id: int


def _find_mine(forge: Forge, mark: str, me: Identity) -> list[Comment]:
    return [c for c in forge.comments() if not c.system and mark in c.body and c.by(me)]


def upsert(forge: Forge, body: str, mark: str, log: Callable[[str], None]) -> Outcome:
    """Edit our marker comment, or create it. A create that failed with 429/5xx may still
    have happened on the server, so before each retry we look for our marker again:
    a retry never leaves two comments."""
    me = forge.me()
    policy = forge.http.retry
    for attempt in range(policy.attempts):
        mine = _find_mine(forge, mark, me)
        if mine:
            if len(mine) > 1:
                log(f"{len(mine)} comments carry the marker; updating the oldest")
            forge.update(mine[0].id, body)
            return Outcome("updated", mine[0].id)
        try:
            return Outcome("created", forge.create(body, retries=False))
        except ApiError as exc:
            if not exc.retryable:
                raise
            if attempt + 1 >= policy.attempts:
                msg = f"{exc} (gave up after {policy.attempts} tries)"
                raise ApiError(msg, exc.status, retryable=True) from None
            wait = policy.wait(attempt, None)
            log(f"{exc}; checking for the comment, then retrying in {wait:.1f} s")
            forge.http.sleep(wait)
    raise AssertionError("unreachable")


def _close_open_blocks(text: str) -> str:
    """What must follow a cut so the rest of the page still renders: a closing code
    fence and one `</details>` per unclosed `<details>`."""
    closers = ""
    if sum(1 for line in text.splitlines() if line.lstrip().startswith("```")) % 2:
        closers += "\n```"
    opened = text.count("<details>") - text.count("</details>")
    closers += "\n\n</details>" * max(0, opened)
    return closers


def fit_body(
    summary: str,
    *,
    mark: str,
    limit: int,
    forge_name: str,
    artifact: str,
    full: str | None = None,
) -> tuple[str, str]:
    """(comment body, what was done to fit it). Prefers the unfolded page when the forge
    allows it (GitLab's 1,000,000); else the summary; else the summary cut at a line
    boundary, its open blocks closed, with a note linking the full report."""
    head = mark + "\n"
    if full is not None and len(head) + len(full) <= limit:
        return head + full, f"the full report fits {forge_name}'s limit: posted unfolded"
    if len(head) + len(summary) <= limit:
        return head + summary, ""
    total = len(summary)
    note = (
        f"\n\n---\n**Cut to fit {forge_name}'s {limit:,}-character comment limit** "
        f"(the report has {total:,} characters); the full report is {artifact}.\n"
    )
    keep = summary[: max(0, limit - len(head) - len(note))]
    while True:
        keep = keep[: keep.rfind("\n")] if "\n" in keep else ""
        body = head + keep + _close_open_blocks(keep) + note
        if len(body) <= limit or not keep:
            return body[:limit], f"cut at {len(keep):,} of {total:,} characters"


@dataclass(frozen=True)
class Options:
    summary: Path
    dry_run: bool
    key: str
    artifact_url: str
    over: Overrides


def _options(args: argparse.Namespace, env: Mapping[str, str]) -> Options:
    summary = Path(args.summary)
    url = args.artifact_url or artifact_base_from_env(summary.parent, env)
    return Options(
        summary=summary,
        dry_run=args.dry_run,
        key=args.key or env.get("HARNESS_POST_KEY", ""),
        artifact_url=url,
        over=Overrides(
            provider=args.provider or "",
            repo=args.repo or "",
            project_id=args.project_id or "",
            number=args.pr,
            api_url=args.api_url or "",
        ),
    )


def _say(msg: str) -> None:
    print(f"[harness] post: {msg}", flush=True)


def _fail(code: int, msg: str, secrets: Sequence[str] = ()) -> int:
    print(f"error: {redact(msg, secrets)}", file=sys.stderr, flush=True)
    return code


def _forge(target: Target, token: Token, env: Mapping[str, str], retry: RetryPolicy) -> Forge:
    http = Http(
        target.api_url,
        token.headers,
        secrets=(token.value,),
        retry=retry,
        log=lambda m: _say(redact(m, (token.value,))),
    )
    if target.provider == "github":
        return GitHubForge(http, target, in_actions=env.get("GITHUB_ACTIONS") == "true")
    return GitLabForge(http, target)


def _rejected_hint(token: Token, status: int | None) -> str:
    if status not in (401, 403):
        return ""
    hint = f" (token from {token.name} rejected"
    if token.name == "CI_JOB_TOKEN":
        hint += "; GitLab job tokens cannot use the notes API: set GITLAB_TOKEN to a project "
        hint += "access token with the api scope"
    return hint + ")"


def run(
    args: argparse.Namespace,
    env: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = None,
) -> int:
    """`python -m harness post`: read the summary, find the target, post or update."""
    env = os.environ if env is None else env
    try:
        opts = _options(args, env)
        mark = marker(opts.key)
    except ContextError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    if not opts.summary.is_file():
        return _fail(EXIT_CONFIG, f"{opts.summary}: no such summary (run `nox -s report` first)")
    summary = opts.summary.read_text(encoding="utf-8")
    full_path = opts.summary.with_name(FULL_NAME)
    full = full_path.read_text(encoding="utf-8") if full_path.is_file() else None
    artifact = artifact_ref(
        full_path.name if full is not None else opts.summary.name, opts.artifact_url
    )
    try:
        target: Target | None = detect_target(env, opts.over)
        problem = ""
    except ContextError as exc:
        target, problem = None, str(exc)
    provider = target.provider if target else (opts.over.provider or "github")
    body, fitted = fit_body(
        summary,
        mark=mark,
        limit=LIMITS[provider],
        forge_name=FORGE_NAMES[provider],
        artifact=artifact,
        full=full,
    )
    if opts.dry_run:
        return _dry_run(target, problem, provider, body, fitted, env)
    if target is None:
        return _fail(EXIT_CONFIG, problem)
    token = find_token(target.provider, env)
    if token is None:
        names = " or ".join(TOKEN_VARS[target.provider])
        return _fail(EXIT_CONFIG, f"no token to post on {target.describe}: set {names}")
    secrets = (token.value,)
    _say(f"{target.describe} via {target.api_url} (context: {target.source}; token {token.name})")
    if fitted:
        _say(f"body fitted to the comment limit: {fitted}")
    forge = _forge(target, token, env, retry or DEFAULT_RETRY)
    try:
        outcome = upsert(forge, body, mark, lambda m: _say(redact(m, secrets)))
    except ApiError as exc:
        where = FORGE_NAMES[target.provider]
        return _fail(EXIT_API, f"{where}: {exc}{_rejected_hint(token, exc.status)}", secrets)
    _say(
        f"{outcome.action} comment {outcome.comment_id} on {target.describe} "
        f"({len(body):,} characters)"
    )
    return EXIT_OK


def _dry_run(
    target: Target | None,
    problem: str,
    provider: str,
    body: str,
    fitted: str,
    env: Mapping[str, str],
) -> int:
    """Print target and body; no network, no token needed (only its variable's name)."""
    if target is None:
        print(f"target: not resolved ({problem})")
    else:
        print(f"target: {target.describe} via {target.api_url} (context: {target.source})")
    token = find_token(provider, env)
    print(
        f"token: {token.name} is set"
        if token
        else f"token: none found ({' or '.join(TOKEN_VARS[provider])}); a real run stops here"
    )
    print(
        f"would create or update the comment carrying {body.splitlines()[0]} "
        f"({len(body):,} characters{'; ' + fitted if fitted else ''}):"
    )
    print("-" * 72)
    print(body, end="" if body.endswith("\n") else "\n")
    print("-" * 72)
    return EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `post` subcommand's flags (cli.py wires them up)."""
    p.add_argument("--summary", default="reports/summary.md", help="default: %(default)s")
    p.add_argument("--dry-run", action="store_true", help="print target and body; no network")
    p.add_argument("--provider", choices=("github", "gitlab"), default=None)
    p.add_argument("--repo", default=None, help="GitHub owner/name (or GitLab group/project)")
    p.add_argument("--project-id", default=None, help="GitLab project id")
    p.add_argument("--pr", "--mr", dest="pr", type=int, default=None, help="PR number / MR iid")
    p.add_argument(
        "--api-url", default=None, help="API root (GitHub Enterprise, self-hosted GitLab)"
    )
    p.add_argument(
        "--artifact-url",
        default=None,
        help="where the reports folder is browsable (URL ending in / = folder; "
        "default from HARNESS_ARTIFACT_URL or the CI)",
    )
    p.add_argument(
        "--key",
        default=None,
        help="one comment per key (e.g. per job); default HARNESS_POST_KEY or none",
    )
