"""Input encoding: tables -> integer field codes + standardized numericals (:class:`TabularEncoder`,
:class:`TabularData`), segmentation cases (:func:`as_cases`) and label-volume patches (:class:`PatchDataset`)."""
from __future__ import annotations

from .masks import MaskCase, as_cases, as_cond
from .tabular import EncodedTable, TabularEncoder, one_hot
from .tensors import TabularData
from .volumes import PatchDataset, open_label_volume

__all__ = ["EncodedTable", "MaskCase", "PatchDataset", "TabularData", "TabularEncoder", "as_cases", "as_cond",
           "one_hot", "open_label_volume"]
