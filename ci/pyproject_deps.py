"""Print the requirements of pyproject.toml (base + the named extras), one a line.

Why: the image installs dependencies in a layer keyed on pyproject.toml alone, so editing
the harness's code does not reinstall them. Usage: pyproject_deps.py PYPROJECT [EXTRA ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 bases (e.g. Ubuntu 22.04 CUDA images)
    import tomli as tomllib  # type: ignore[no-redef]


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """Base dependencies followed by those of each extra, in file order."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"error: {pyproject} has no extra {extra!r}")
        reqs += optional[extra]
    return reqs


if __name__ == "__main__":
    print("\n".join(requirements(Path(sys.argv[1]), sys.argv[2:])))
