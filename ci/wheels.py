"""Carried wheels small enough for a device call: `.whl.xz` files, packed and unpacked.

Why: a call to the GPU machine carries at most 64 MiB of working tree, and flashinfer's
wheel alone is 62 MB (deflate, file by file, over 423 MB of mostly C++ and CUDA sources),
so with the rest of the tree the peers' wheels no longer fitted (twenty-sixth session).
Stored uncompressed inside and xz-compressed as a whole, the same wheel is 17 MB; unpacked
it is the wheel again (same members, same bytes), which pip installs as usual.

    python3 ci/wheels.py pack DIR                # DIR/*.whl -> DIR/*.whl.xz (each .whl removed)
    python3 ci/wheels.py list DIR... [--out OUT] # every wheel of the DIRs, one path a line:
                                                 # DIR/*.whl as they are, DIR/*.whl.xz unpacked
                                                 # into OUT (default $TMPDIR/harness-wheels:
                                                 # not inside a folder that a device call carries)

Standard library only: it runs on the GPU machine's bare interpreter and inside nox.
"""

from __future__ import annotations

import argparse
import lzma
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

SUFFIX = ".whl.xz"
UNPACKED = Path(tempfile.gettempdir()) / "harness-wheels"


class WheelError(Exception):
    """A file that is not the wheel or packed wheel it is named as."""


def pack(whl: Path) -> Path:
    """whl -> whl + '.xz' (members stored, the whole xz-compressed); the .whl is removed."""
    out = whl.with_name(whl.name + ".xz")
    try:
        src = zipfile.ZipFile(whl)
    except (OSError, zipfile.BadZipFile) as exc:
        raise WheelError(f"{whl}: not a wheel ({exc})") from exc
    with src, tempfile.NamedTemporaryFile(dir=whl.parent, suffix=".part", delete=False) as tmp:
        try:
            with (
                lzma.open(tmp, "wb", preset=6) as xz,
                zipfile.ZipFile(xz, "w", zipfile.ZIP_STORED) as dst,
            ):
                for info in src.infolist():
                    dst.writestr(info, src.read(info), compress_type=zipfile.ZIP_STORED)
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, out)
    os.chmod(out, 0o644)  # a temporary file's 0600 otherwise
    whl.unlink()
    return out


def unpack(packed: Path, out_dir: Path) -> Path:
    """packed (NAME.whl.xz) -> out_dir/NAME.whl, unless an unpacked copy newer than it is there."""
    out = out_dir / packed.name.removesuffix(".xz")
    if out.exists() and out.stat().st_mtime >= packed.stat().st_mtime:
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    try:
        with lzma.open(packed) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        problem = None if zipfile.is_zipfile(part) else "unpacks to something that is not a wheel"
    except (OSError, lzma.LZMAError, EOFError) as exc:
        problem = f"not an xz-packed wheel ({exc})"
    if problem:
        part.unlink(missing_ok=True)
        raise WheelError(f"{packed}: {problem}")
    os.replace(part, out)
    return out


def wheels(dirs: list[Path], out_dir: Path = UNPACKED) -> list[Path]:
    """Every wheel of `dirs`: their *.whl, and their *.whl.xz unpacked into out_dir."""
    found: list[Path] = []
    for d in dirs:
        found += sorted(d.glob("*.whl"))
        found += [unpack(p, out_dir) for p in sorted(d.glob("*" + SUFFIX))]
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pack", help="DIR/*.whl -> DIR/*.whl.xz").add_argument("dir", type=Path)
    ls = sub.add_parser("list", help="every wheel of the DIRs, packed ones unpacked")
    ls.add_argument("dirs", type=Path, nargs="+")
    ls.add_argument(
        "--out", type=Path, default=UNPACKED, help=f"where packed wheels unpack ({UNPACKED})"
    )
    args = ap.parse_args(argv)
    try:
        if args.cmd == "pack":
            whls = sorted(args.dir.glob("*.whl"))
            if not whls:
                raise WheelError(f"{args.dir}: no *.whl to pack")
            for whl in whls:
                before = whl.stat().st_size
                out = pack(whl)
                print(f"{out}: {before / 2**20:.2f} MiB -> {out.stat().st_size / 2**20:.2f} MiB")
        else:
            for whl in wheels(args.dirs, args.out):
                print(whl)
    except WheelError as exc:
        print(f"wheels: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
