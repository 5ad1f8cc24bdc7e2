"""Where the PR bot posts: forge, API root, repository/project and PR/MR number, from
flags first, then the harness's own HARNESS_* variables, then the CI's standard ones
(GitHub Actions, GitLab CI, Jenkins multibranch). And which token it uses.

Only names of variables are ever reported back to the user, never their values.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROVIDERS = ("github", "gitlab")
GITHUB_API = "https://api.github.com"
GITLAB_API = "https://gitlab.com/api/v4"
TOKEN_VARS = {"github": ("GITHUB_TOKEN", "GH_TOKEN"), "gitlab": ("GITLAB_TOKEN", "CI_JOB_TOKEN")}


class ContextError(Exception):
    """The target cannot be determined; the message says which flag or variable to set."""


@dataclass(frozen=True)
class Overrides:
    """The CLI's flags; empty/None means "take it from the environment"."""

    provider: str = ""
    repo: str = ""
    project_id: str = ""
    number: int | None = None
    api_url: str = ""


@dataclass(frozen=True)
class Target:
    """One PR (GitHub) or MR (GitLab). For GitLab `repo` is the project id, or its path
    URL-encoded as the API wants it."""

    provider: str
    api_url: str
    repo: str
    number: int
    source: str  # where the context came from, for the log line

    @property
    def describe(self) -> str:
        if self.provider == "github":
            return f"GitHub PR {self.repo}#{self.number}"
        return f"GitLab MR !{self.number} of project {urllib.parse.unquote(self.repo)}"


@dataclass(frozen=True)
class Token:
    """A credential and how it is sent; `name` is the variable it came from."""

    name: str
    value: str = field(default="", repr=False)  # never in a repr, a log or a traceback

    @property
    def headers(self) -> dict[str, str]:
        if self.name in TOKEN_VARS["github"]:
            return {
                "Authorization": f"Bearer {self.value}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            }
        if self.name == "CI_JOB_TOKEN":
            return {"JOB-TOKEN": self.value}
        return {"PRIVATE-TOKEN": self.value}


def find_token(provider: str, env: Mapping[str, str]) -> Token | None:
    """The first non-empty token variable for `provider` (see TOKEN_VARS), or None."""
    for name in TOKEN_VARS[provider]:
        if env.get(name, "").strip():
            return Token(name, env[name].strip())
    return None


def _change_url(env: Mapping[str, str]) -> tuple[str, str, str] | None:
    """Jenkins multibranch's CHANGE_URL -> (provider, api root, repo/project)."""
    url = env.get("CHANGE_URL", "")
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    root = f"{parts.scheme}://{parts.netloc}"
    m = re.fullmatch(r"/(.+?)/-/merge_requests/\d+/?", parts.path)
    if m:
        return "gitlab", f"{root}/api/v4", urllib.parse.quote(m.group(1), safe="")
    m = re.fullmatch(r"/([^/]+/[^/]+)/pull/\d+/?", parts.path)
    if m:
        api = GITHUB_API if parts.netloc == "github.com" else f"{root}/api/v3"
        return "github", api, m.group(1)
    return None


def _provider(over: Overrides, env: Mapping[str, str]) -> tuple[str, str]:
    if over.provider:
        return over.provider, "flags"
    forced = env.get("HARNESS_POST_PROVIDER", "").strip().lower()
    if forced:
        if forced not in PROVIDERS:
            raise ContextError(
                f"HARNESS_POST_PROVIDER={forced!r}: expected one of {', '.join(PROVIDERS)}"
            )
        return forced, "HARNESS_POST_PROVIDER"
    if env.get("GITLAB_CI") == "true":
        return "gitlab", "GitLab CI"
    if env.get("GITHUB_ACTIONS") == "true":
        return "github", "GitHub Actions"
    if env.get("CHANGE_ID") and (found := _change_url(env)):
        return found[0], "Jenkins CHANGE_URL"
    if over.project_id:
        return "gitlab", "flags"
    if over.repo:
        return "github", "flags"
    raise ContextError(
        "cannot tell where to post: pass --provider github|gitlab (or set "
        "HARNESS_POST_PROVIDER) with --repo/--project-id and --pr/--mr; GitHub Actions and "
        "GitLab CI merge-request pipelines are detected by themselves"
    )


def _event_pr_number(env: Mapping[str, str]) -> int | None:
    """The PR number from the GitHub Actions event payload (pull_request,
    pull_request_target, issue_comment on a PR, workflow_run)."""
    path = env.get("GITHUB_EVENT_PATH", "")
    if not path:
        return None
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(event, dict):
        return None
    pr = event.get("pull_request")
    if isinstance(pr, dict) and isinstance(pr.get("number"), int):
        return pr["number"]
    issue = event.get("issue")
    if (
        isinstance(issue, dict)
        and issue.get("pull_request")
        and isinstance(issue.get("number"), int)
    ):
        return issue["number"]
    run = event.get("workflow_run")
    prs = run.get("pull_requests") if isinstance(run, dict) else None
    if isinstance(prs, list) and prs and isinstance(prs[0], dict):
        number = prs[0].get("number")
        return number if isinstance(number, int) else None
    return None


def _int(value: str, what: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or int(value) <= 0:
        raise ContextError(f"{what}={value!r}: expected a positive PR/MR number")
    return int(value)


def _github(over: Overrides, env: Mapping[str, str], source: str) -> Target:
    jenkins = _change_url(env) if env.get("CHANGE_ID") else None
    jenkins = jenkins if jenkins and jenkins[0] == "github" else None
    repo = over.repo or env.get("HARNESS_REPO", "") or env.get("GITHUB_REPOSITORY", "")
    repo = repo or (jenkins[2] if jenkins else "")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ContextError(
            f"GitHub repository {'unknown' if not repo else repr(repo)}: pass --repo "
            "owner/name (or set HARNESS_REPO; GitHub Actions sets GITHUB_REPOSITORY)"
        )
    api = over.api_url or env.get("HARNESS_API_URL", "") or env.get("GITHUB_API_URL", "")
    api = api or (jenkins[1] if jenkins else GITHUB_API)
    number = over.number or _int(env.get("HARNESS_PR", ""), "HARNESS_PR")
    m = re.fullmatch(r"refs/pull/(\d+)/(?:merge|head)", env.get("GITHUB_REF", ""))
    number = number or (int(m.group(1)) if m else None) or _event_pr_number(env)
    number = number or _int(env.get("CHANGE_ID", ""), "CHANGE_ID")
    if not number:
        ref = env.get("GITHUB_REF", "")
        raise ContextError(
            "no pull request number: pass --pr N (or set HARNESS_PR)"
            + (f"; GITHUB_REF={ref} is not a pull-request ref" if ref else "")
        )
    return Target("github", api.rstrip("/"), repo, number, source)


def _gitlab(over: Overrides, env: Mapping[str, str], source: str) -> Target:
    jenkins = _change_url(env) if env.get("CHANGE_ID") else None
    jenkins = jenkins if jenkins and jenkins[0] == "gitlab" else None
    project = over.project_id or env.get("HARNESS_PROJECT_ID", "")
    path = over.repo or env.get("HARNESS_REPO", "")
    project = project or (urllib.parse.quote(path, safe="") if path else "")
    project = project or env.get("CI_PROJECT_ID", "") or (jenkins[2] if jenkins else "")
    if not project:
        raise ContextError(
            "GitLab project unknown: pass --project-id N or --repo group/project (or set "
            "HARNESS_PROJECT_ID; GitLab CI sets CI_PROJECT_ID)"
        )
    api = over.api_url or env.get("HARNESS_API_URL", "") or env.get("CI_API_V4_URL", "")
    api = api or (jenkins[1] if jenkins else GITLAB_API)
    number = over.number or _int(env.get("HARNESS_PR", ""), "HARNESS_PR")
    number = number or _int(env.get("CI_MERGE_REQUEST_IID", ""), "CI_MERGE_REQUEST_IID")
    number = number or _int(env.get("CHANGE_ID", ""), "CHANGE_ID")
    if not number:
        raise ContextError(
            "no merge request: pass --mr N (or set HARNESS_PR); GitLab sets "
            "CI_MERGE_REQUEST_IID only in merge-request pipelines"
        )
    return Target("gitlab", api.rstrip("/"), project, number, source)


def detect_target(env: Mapping[str, str], over: Overrides | None = None) -> Target:
    """The PR/MR to post on; raises ContextError naming what to set."""
    over = over or Overrides()
    provider, source = _provider(over, env)
    if env.get("JENKINS_URL") and env.get("CHANGE_ID") and "Jenkins" not in source:
        source = f"Jenkins ({source})"
    return (_github if provider == "github" else _gitlab)(over, env, source)
