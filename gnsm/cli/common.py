"""What every ``gnsm`` command shares: the user-error type, option types, early checks, messages.

Every check here runs before any training or scoring, so a bad option costs nothing: it raises
:class:`CLIError`, which ``gnsm`` prints as ``gnsm: error: <message>`` with exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

__all__ = [
    "CLIError",
    "LazyChoices",
    "add_quiet",
    "check_columns",
    "check_creatable",
    "check_device",
    "check_model_dir",
    "check_out_dir",
    "check_output_file",
    "is_main_process",
    "load_table",
    "positive_int",
    "save_table",
    "say",
    "split_label",
]


class CLIError(Exception):
    """A user error reported as ``gnsm: error: ...`` with exit status 2."""


# ---------------------------------------------------------------------------- option types
def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


class LazyChoices(Sequence[str]):
    """argparse ``choices`` read from ``module.attribute`` on first use.

    The detectors' option tuples live with the detectors (importing them loads torch); reading them
    only when an option is parsed or its help is shown keeps ``gnsm --help`` fast. Give the option a
    ``metavar``: without one, argparse lists the choices while the parser is being built.
    """

    def __init__(self, module: str, attribute: str) -> None:
        self._where = (module, attribute)
        self._values: tuple[str, ...] | None = None

    def _get(self) -> tuple[str, ...]:
        if self._values is None:
            module, attribute = self._where
            self._values = tuple(getattr(importlib.import_module(module), attribute))
        return self._values

    def __getitem__(self, index: Any) -> Any:
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __contains__(self, value: object) -> bool:
        return value in self._get()


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages")


def say(args: argparse.Namespace, *msg: Any) -> None:
    """A progress message on stderr, unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(*msg, file=sys.stderr, flush=True)


def is_main_process() -> bool:
    """False on the ranks > 0 of a ``torchrun`` launch (they train, but do not write or print)."""
    import torch.distributed as dist
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


# ---------------------------------------------------------------------------- early checks
def check_device(device: str, flag: str = "--device") -> None:
    """A device the detectors can use here: ``auto``, ``cpu``, or ``cuda[:i]`` with a GPU present."""
    from ..detectors import resolve_device

    try:
        resolve_device(device, name=flag)
    except ValueError as err:
        raise CLIError(str(err)) from None


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def check_creatable(path: Path, flag: str, what: str) -> None:
    """``path`` is an existing folder or can be made one (no file in the way, writable parent)."""
    base = _nearest_existing(path)
    if base == path:
        if not path.is_dir():
            raise CLIError(f"{flag}: {path} exists and is not a folder; expected a {what}")
    elif not base.is_dir():
        raise CLIError(f"{flag}: cannot create {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise CLIError(f"{flag}: {base} is not writable")


def check_model_dir(path: str, flag: str = "--model-dir") -> None:
    """The model folder can be written (checked before training, so no training run is lost).

    ``save`` replaces an existing folder only when it is empty or holds a saved model and nothing
    else (its ``meta.json`` and ``weights.pt``); any other folder is refused here, up front.
    """
    from ..detectors import META_FILE, WEIGHTS_FILE

    folder = Path(path).expanduser()
    check_creatable(folder, flag, "model folder")
    if folder.is_dir():
        other = sorted(p.name for p in folder.iterdir() if p.name not in (META_FILE, WEIGHTS_FILE))
        if other:
            raise CLIError(f"{flag}: {folder} holds files that are not a saved model ({', '.join(other[:5])}); "
                           "choose another folder or empty it")


def check_out_dir(path: str, flag: str = "--out") -> None:
    """An output folder that exists or can be created."""
    check_creatable(Path(path).expanduser(), flag, "folder for the outputs")


def check_output_file(path: str, flag: str = "--output") -> None:
    """An output table: a writable suffix, not a folder, in a folder that exists or can be created."""
    from ..datasets import table_kind

    p = Path(path).expanduser()
    if p.is_dir():
        raise CLIError(f"{flag}: {p} is a folder; expected a file name")
    try:
        table_kind(p, flag, write=True)
    except ValueError as err:
        raise CLIError(str(err)) from None
    check_creatable(p.parent, flag, "folder for the output file")


# ---------------------------------------------------------------------------- tables
def load_table(path: str, flag: str = "input") -> Any:
    """The table at ``path`` (CSV, TSV, Parquet or ARFF by suffix; see :mod:`gnsm.datasets.tables`)."""
    from ..datasets import read_table

    return read_table(path, name=flag)


def save_table(frame: Any, path: str, flag: str = "--output") -> None:
    """Write ``frame`` by suffix; an OS failure (full disk, no permission) becomes a named error."""
    from ..datasets import write_table

    try:
        write_table(frame, path, name=flag)
    except OSError as err:
        raise CLIError(f"{flag}: cannot write {path}: {err.strerror or err}") from None


def split_label(frame: Any, label_col: str | None, required: bool = False) -> tuple[Any, Any]:
    """``(features, label column)``; the label is ``None`` when ``label_col`` is not given."""
    if label_col is None:
        if required:
            raise CLIError("--label-col is required here")
        return frame, None
    if label_col not in frame.columns:
        raise CLIError(f"--label-col: column {label_col!r} is not in the table (columns: {list(frame.columns)})")
    return frame.drop(columns=[label_col]), frame[label_col]


def check_columns(frame: Any, names: Sequence[str] | None, flag: str) -> None:
    missing = [c for c in (names or []) if c not in frame.columns]
    if missing:
        raise CLIError(f"{flag}: unknown column(s) {missing} (columns: {list(frame.columns)})")

