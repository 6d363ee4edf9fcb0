"""The ``gnsm`` command line (console script ``gnsm = gnsm.cli:main``, also ``python -m gnsm``).

Commands, one module per family: :mod:`gnsm.cli.tabular` (``demo``, ``fit``, ``score``, ``explain``,
``evaluate``, ``info``) and :mod:`gnsm.cli.segmentation` (``fit-seg``, ``score-seg``, ``evaluate-seg``,
``report-seg``); :mod:`gnsm.cli.main` builds the parser and turns user errors into
``gnsm: error: ...`` with exit status 2; :mod:`gnsm.cli.common` holds what the commands share.
"""
from __future__ import annotations

from .common import CLIError
from .main import build_parser, main

__all__ = ["CLIError", "build_parser", "main"]
