"""Reading and writing tables by file suffix: the one suffix rule of the package.

========================== ======== ===== =====
suffix                     kind     read  write
========================== ======== ===== =====
``.csv``, ``.csv.gz``,     csv      yes   yes
``.txt``
``.tsv``                   tsv      yes   yes
``.parquet``, ``.pq``      parquet  yes   yes
``.arff``                  arff     yes   no
========================== ======== ===== =====

Suffixes are matched case-insensitively, longest first. CSV and TSV are read with
``skipinitialspace=True`` (UCI-style files put a space after each comma). Every table must have a
header whose column names are unique (pandas would otherwise rename the second ``a`` to ``a.1``
silently) and at least one row.
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path

import pandas as pd

from .arff import read_arff

__all__ = ["TABLE_SUFFIXES", "WRITABLE_KINDS", "read_table", "table_kind", "write_table"]

TABLE_SUFFIXES: dict[str, str] = {".csv": "csv", ".csv.gz": "csv", ".txt": "csv", ".tsv": "tsv",
                                  ".parquet": "parquet", ".pq": "parquet", ".arff": "arff"}
WRITABLE_KINDS = ("csv", "tsv", "parquet")


def table_kind(path: str | PathLike, name: str = "path", write: bool = False) -> str:
    """The kind (``csv``, ``tsv``, ``parquet``, ``arff``) of ``path`` from its suffix.

    Raises:
        ValueError: naming ``name`` when the suffix is not one of :data:`TABLE_SUFFIXES` (or, with
            ``write=True``, not a writable kind).
    """
    file = Path(path).name.lower()
    for suffix, kind in sorted(TABLE_SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if file.endswith(suffix) and (not write or kind in WRITABLE_KINDS):
            return kind
    allowed = sorted(s for s, k in TABLE_SUFFIXES.items() if not write or k in WRITABLE_KINDS)
    raise ValueError(f"{name}: unsupported file type {Path(path).name!r}; expected one of {allowed}")


def _check_header(columns: list, path: Path, name: str) -> None:
    seen: set = set()
    dupes = [c for c in columns if c in seen or seen.add(c)]
    if dupes:
        raise ValueError(f"{name}: {path} has duplicate column name(s) {sorted(set(map(str, dupes)))}; "
                         "rename them so every column has its own name")


def read_table(path: str | PathLike, name: str = "path",
               with_nominal: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, list[str] | None]:
    """Read a CSV / TSV / Parquet / ARFF table chosen by suffix (see the module docstring).

    Args:
        path: the file.
        name: the argument name used in error messages.
        with_nominal: also return the columns the file declares nominal (ARFF only; ``None`` for
            the other kinds).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: unsupported suffix, no header, duplicate column names, or no rows.
    """
    path = Path(path).expanduser()
    kind = table_kind(path, name)  # unsupported type: a clear error before looking for the file
    if not path.is_file():
        raise FileNotFoundError(f"{name}: file not found: {path}")
    nominal: list[str] | None = None
    if kind == "arff":
        frame, nominal = read_arff(path)
    elif kind == "parquet":
        frame = pd.read_parquet(path)
    else:
        sep = "\t" if kind == "tsv" else ","
        try:
            # The raw header first: read_csv itself would rename a repeated name to "name.1".
            header = pd.read_csv(path, sep=sep, header=None, nrows=1, skipinitialspace=True,
                                 dtype=str, keep_default_na=False)
            frame = pd.read_csv(path, sep=sep, skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise ValueError(f"{name}: {path} is empty (no header and no rows)") from None
        # Empty names are left to pandas ("Unnamed: 0", ...), which keeps them apart.
        _check_header([c for c in header.iloc[0].tolist() if c != ""], path, name)
    _check_header(list(frame.columns), path, name)
    if frame.shape[0] == 0:
        raise ValueError(f"{name}: {path} has no rows (a header only)")
    return (frame, nominal) if with_nominal else frame


def write_table(frame: pd.DataFrame, path: str | PathLike, name: str = "path") -> Path:
    """Write ``frame`` (without its index) as CSV, TSV or Parquet chosen by the suffix of ``path``.

    The parent folder is created when missing. Returns the path.

    Raises:
        ValueError: unsupported suffix (checked before anything is written), or ``path`` is an
            existing folder.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a folder; expected a file name")
    kind = table_kind(path, name, write=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, sep="\t" if kind == "tsv" else ",", index=False)
    return path
