r"""Writes that never leave a partial store or file behind: the one atomic writer of diffda.

``write_store(path, fill)`` has ``fill(tmp)`` make a directory store (Zarr) as a temporary sibling,
then renames it into place; an existing store at ``path`` is moved aside first and removed only once
the new one is in place. ``write_atomic(ds, path)`` is that for a consolidated Zarr 3 store of a
Dataset. ``write_file(path, write)`` does the same for one file: ``write(tmp)`` fills a
temporary sibling, which is fsynced and ``os.replace``\ d onto ``path``. A write killed at any
point leaves either the old content or the new one at ``path`` (and perhaps a ``.tmp``/``.old``
sibling), never a half-written one. Temporary names carry the process id and a random token, so
two processes writing the same path never share a temporary.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import xarray as xr


def write_atomic(ds: xr.Dataset, path: str | Path, encoding: dict | None = None) -> Path:
    """Write ``ds`` (chunked and encoded as the caller wants) as ``path``; returns ``path``."""
    return write_store(path, lambda tmp: ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=3,
                                                    encoding=encoding))


def write_store(path: str | Path, fill: Callable[[Path], object]) -> Path:
    """Make the directory store ``path`` all or nothing: ``fill(tmp)`` writes a unique sibling, which
    then replaces ``path``; the temporary is removed if ``fill`` raises."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = _sibling(path, "old")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


def _sibling(path: Path, kind: str) -> Path:
    """``name.KINDpid-token.suffix`` beside ``path`` (the suffix kept for writers that add their own)."""
    return path.with_name(f"{path.stem}.{kind}{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


def write_file(path: str | Path, write: Callable[[Path], object], mode: int | None = None) -> Path:
    """Make the file ``path`` all or nothing: ``write(tmp)`` on a unique sibling, fsync, rename.

    ``mode`` (e.g. ``0o644``) is set on the file before the rename when given; the temporary is
    removed if ``write`` raises.
    """
    path = Path(path)
    tmp = _sibling(path, "tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """:func:`write_file` of ``data``."""
    return write_file(path, lambda tmp: tmp.write_bytes(data))
def write_text(path: str | Path, text: str) -> Path:
    """:func:`write_bytes` of UTF-8 text."""
    return write_bytes(path, text.encode())
