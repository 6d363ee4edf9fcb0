"""Data encoding: tabular tables -> integer field codes + standardized numerical columns."""
from __future__ import annotations

from .tabular import EncodedTable, TabularEncoder, one_hot

__all__ = ["EncodedTable", "TabularEncoder", "one_hot"]
