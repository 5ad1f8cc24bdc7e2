#!/usr/bin/env bash
# Build a registry-free Debian base image for the CPU smoke build (CONTAINER-NOTES step 3).
# Usage: ci/local-base.sh [TAG]   (default localbase:bookworm; no-op when TAG exists)
# Needs: root, debootstrap, a running docker daemon. Packages come from deb.debian.org.
set -euo pipefail
tag="${1:-localbase:bookworm}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "[local-base] $tag already present"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap not installed (apt-get install -y debootstrap)" >&2; exit 2; }
root="$(mktemp -d /tmp/localbase.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "[local-base] debootstrap $suite into $root (about 40 s)"
debootstrap --variant=minbase \
    --include=python3,python3-pip,python3-venv,ca-certificates,g++,git \
    "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; echo "error: debootstrap failed (log: $root.log)" >&2; exit 2; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "[local-base] imported $tag"
