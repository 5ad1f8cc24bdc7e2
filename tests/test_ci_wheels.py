"""ci/wheels.py on a CPU: a packed wheel (NAME.whl.xz) unpacks to the same members and bytes,
smaller than the wheel when its members compress together; `list` reuses what it unpacked;
a broken file is one message and exit 2, with nothing half-written left behind."""

from __future__ import annotations

import importlib.util
import os
import random
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ci_wheels", ROOT / "ci" / "wheels.py")
wheels_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wheels_mod)

NAME = "demo_pkg-1.0-py3-none-any.whl"


def _wheel(folder: Path) -> dict[str, bytes]:
    """A wheel-shaped zip, deflated member by member, of many similar source files (what
    makes flashinfer's wheel shrink when packed as a whole)."""
    rng = random.Random(3)
    body = "".join(
        f"template <int N{i}> __device__ void f{i}(float* x) {{ x[{i}] += {i}; }}\n"
        for i in range(200)
    )
    members = {
        f"demo_pkg/csrc/k{i}.cuh": (body + f"// {rng.random()}\n").encode() for i in range(40)
    }
    members["demo_pkg-1.0.dist-info/METADATA"] = (
        b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n"
    )
    with zipfile.ZipFile(folder / NAME, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return members


def test_pack_then_list_gives_back_the_same_wheel(tmp_path: Path) -> None:
    carried, out = tmp_path / "carried", tmp_path / "unpacked"
    carried.mkdir()
    members = _wheel(carried)
    deflated = (carried / NAME).stat().st_size
    assert wheels_mod.main(["pack", str(carried)]) == 0
    packed = carried / (NAME + ".xz")
    assert not (carried / NAME).exists() and packed.exists()
    assert packed.stat().st_size < deflated / 4  # deflate per member cannot see the repeats
    assert packed.stat().st_mode & 0o777 == 0o644

    (whl,) = wheels_mod.wheels([carried], out)
    assert whl == out / NAME
    with zipfile.ZipFile(whl) as z:
        assert z.testzip() is None
        assert {n: z.read(n) for n in z.namelist()} == members
    # listed again: the unpacked copy is reused, not written anew
    before = whl.stat().st_mtime_ns
    os.utime(packed, (1, 1))  # the packed file older than its unpacked copy
    assert wheels_mod.wheels([carried], out) == [whl] and whl.stat().st_mtime_ns == before


def test_list_passes_plain_wheels_through(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _wheel(tmp_path)
    assert wheels_mod.main(["list", str(tmp_path), "--out", str(tmp_path / "u")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / NAME)]
    assert not (tmp_path / "u").exists()


def test_broken_files_are_one_message_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / (NAME + ".xz")).write_bytes(b"not xz at all")
    assert wheels_mod.main(["list", str(tmp_path), "--out", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an xz-packed wheel" in err and NAME in err
    assert list((tmp_path / "u").iterdir()) == []  # no .part left behind

    (tmp_path / (NAME + ".xz")).unlink()
    (tmp_path / NAME).write_bytes(b"PK but not a zip")
    assert wheels_mod.main(["pack", str(tmp_path)]) == 2
    assert "not a wheel" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME, "u"]  # nothing half-written

    empty = tmp_path / "empty"
    empty.mkdir()
    assert wheels_mod.main(["pack", str(empty)]) == 2
    assert "no *.whl to pack" in capsys.readouterr().err
