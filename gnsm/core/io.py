"""Atomic writes: a reader (or a process killed mid-write) sees the old content or the new, never a mix.

* :func:`atomic_write` / :func:`atomic_write_bytes`: one file. The content goes to a temporary file
  ``.<name>.<random>.tmp`` in the target's folder (same file system, so the final rename is atomic),
  is flushed and fsynced, then ``os.replace`` puts it in place and the folder is fsynced.
* :func:`atomic_replace_dir`: a whole folder (a saved model: weights + metadata that must agree). It is
  filled as a temporary sibling ``.<name>.<random>.tmp``; only when ``fill`` has returned is the old
  folder renamed aside (``.<name>.<random>.old``), the new one renamed into place, and the old removed.
  A crash before the swap leaves the old folder untouched; a crash between the two renames leaves the
  complete old folder as the ``.old`` sibling.
  A later successful replace of the same folder removes such leftovers once they are an hour old
  (younger ones may belong to a save still running in another process); :func:`interrupted_replace`
  finds the ``.old`` sibling when the folder itself is missing.
* :func:`clean_stale_temps`: removes the temporaries a killed writer left behind.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_replace_dir", "atomic_write", "atomic_write_bytes", "clean_stale_temps", "interrupted_replace",
           "temp_pattern"]

PathLike = str | os.PathLike
_LEFTOVER_AGE_S = 3600.0  # leftovers of a killed folder replace older than this are removed by the next one


def temp_pattern(name: str) -> str:
    """The glob pattern of the temporaries that :func:`atomic_write` / :func:`atomic_replace_dir`
    create for a target called ``name`` (for :func:`clean_stale_temps`)."""
    return f".{_glob_escape(name)}.*.tmp"


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform / file system: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, writer: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` atomically: ``writer(f)`` fills a binary file object, which becomes ``path``
    only once ``writer`` returned and the data reached the disk. On any error the temporary is
    removed, ``path`` is left as it was, and the error propagates."""
    path = Path(path)
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def atomic_replace_dir(path: PathLike, fill: Callable[[Path], None], *,
                       may_replace: Callable[[Path], bool] | None = None) -> None:
    """Create or replace the folder ``path`` with the content ``fill(tmp)`` writes into an empty folder.

    The old folder (if any) stays untouched until ``fill`` returned; on any error the temporary is
    removed and the error propagates. ``may_replace(path)``, when given, is asked before any work
    whether an existing, non-empty folder may be replaced (e.g. "it holds a saved model and nothing
    else"); False raises ``ValueError``. A ``path`` that exists and is not a folder, or below a file,
    raises ``ValueError``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a folder")
    if path.is_dir() and may_replace is not None and any(path.iterdir()) and not may_replace(path):
        raise ValueError(f"{path}: the folder exists and holds files this writer did not make; "
                         "refusing to replace it (choose another folder or empty it)")
    parent = path.parent
    if not parent.is_dir():
        blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise ValueError(f"{path}: cannot create the folder: {blocker} is a file, not a folder")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    old = None
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.replace(path, old)  # over the empty placeholder mkdtemp made
        os.replace(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        if old is not None and not path.exists():
            os.replace(old, path)  # put the old folder back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    for pattern in (temp_pattern(path.name), _old_pattern(path.name)):
        clean_stale_temps(parent, pattern, min_age_s=_LEFTOVER_AGE_S)


def _old_pattern(name: str) -> str:
    return f".{_glob_escape(name)}.*.old"


def interrupted_replace(path: PathLike) -> Path | None:
    """When the folder ``path`` is missing: the complete old folder that an :func:`atomic_replace_dir`
    killed between its two renames left as a ``.<name>.<random>.old`` sibling (the newest), else None."""
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return None
    found = [p for p in path.parent.iterdir() if fnmatch.fnmatchcase(p.name, _old_pattern(path.name)) and p.is_dir()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def clean_stale_temps(folder: PathLike, pattern: str, min_age_s: float = 0.0) -> list[Path]:
    """Remove the entries of ``folder`` whose name matches the glob ``pattern`` (files or folders)
    and that were last modified at least ``min_age_s`` seconds ago; return the removed paths.

    Call it where no other writer can be active on the same targets (e.g. when a run starts), or
    give ``min_age_s`` larger than any write takes. A missing ``folder`` removes nothing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    removed = []
    for entry in folder.iterdir():
        if not fnmatch.fnmatchcase(entry.name, pattern):
            continue
        try:
            if now - entry.lstat().st_mtime < min_age_s:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # removed meanwhile
            continue
        removed.append(entry)
    return removed
