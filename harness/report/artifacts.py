"""Links from the report (and the PR comment) to files kept as CI artifacts: the full
report when the comment had to be folded, and the PNG chart.

A PR comment cannot use a relative link (it would resolve against the PR's page), so
when the CI tells us where its artifacts live we link there: GitLab job artifacts and
Jenkins archived artifacts can be linked file by file; GitHub Actions artifacts are zips,
so we link the run's page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV_ARTIFACT_URL = "HARNESS_ARTIFACT_URL"


def artifact_link(name: str, base_url: str) -> str:
    """The URL of artifact `name`: a base ending in `/` is a folder (files are linked
    inside it); any other base is a page that holds the artifacts, linked as is."""
    if not base_url:
        return ""
    return base_url + name if base_url.endswith("/") else base_url


def artifact_ref(name: str, base_url: str) -> str:
    """Markdown for artifact `name`: a link when its URL is known, else the file name
    (`summary-full.md` in the CI artifacts)."""
    url = artifact_link(name, base_url)
    return f"[{name}]({url})" if url else f"`{name}`"


def _relative_folder(folder: str | Path, root: str) -> str | None:
    """`folder` relative to the checkout the CI archives from (`root`, else the current
    directory); None when it lies outside, where no artifact URL can point."""
    base = Path(root or Path.cwd()).resolve()
    try:
        rel = Path(folder).resolve().relative_to(base)
    except ValueError:
        return None
    text = rel.as_posix()
    return "" if text == "." else text


def artifact_base_from_env(folder: str | Path, env: Mapping[str, str] | None = None) -> str:
    """Where the report folder `folder` will be browsable once the CI job archives it:
    HARNESS_ARTIFACT_URL if set, else derived from GitLab CI (CI_JOB_URL, paths relative
    to CI_PROJECT_DIR), Jenkins (BUILD_URL, relative to WORKSPACE) or GitHub Actions (the
    run page); "" when unknown."""
    env = os.environ if env is None else env
    if env.get(ENV_ARTIFACT_URL):
        return env[ENV_ARTIFACT_URL]
    if env.get("GITLAB_CI") == "true" and env.get("CI_JOB_URL"):
        rel = _relative_folder(folder, env.get("CI_PROJECT_DIR", ""))
        if rel is not None:
            return f"{env['CI_JOB_URL'].rstrip('/')}/artifacts/file/{rel + '/' if rel else ''}"
    elif env.get("BUILD_URL") and env.get("JENKINS_URL"):
        rel = _relative_folder(folder, env.get("WORKSPACE", ""))
        if rel is not None:
            return f"{env['BUILD_URL'].rstrip('/')}/artifact/{rel + '/' if rel else ''}"
    elif env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_RUN_ID"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        repo = env.get("GITHUB_REPOSITORY", "")
        if repo:
            return f"{server}/{repo}/actions/runs/{env['GITHUB_RUN_ID']}"
    return ""
