"""Datasets: the table reader / writer (one suffix rule), the registries of named tables, and the
segmentation data loaders.

- :mod:`.tables`: :func:`read_table` / :func:`write_table` (CSV, TSV, Parquet; ARFF read only);
- :mod:`.registry`: :func:`load_dataset` (a registered name or any table file), :func:`find_data_dir`;
- :mod:`.class_tables`: tables whose label has several normal classes (:func:`load_class_table`);
- :mod:`.segmentation`: CamVid label maps and the spine label volumes.

The data directory is ``$GNSM_DATA_DIR`` when set, else the first ``shared/data`` folder found
walking up from the current directory, then from this package's folder.
"""
from __future__ import annotations

from .arff import read_arff
from .class_tables import CLASS_TABLES, ClassTable, load_class_table
from .registry import (
    BUNDLED_DIR,
    Dataset,
    DatasetSpec,
    find_data_dir,
    list_datasets,
    load_dataset,
    register_dataset,
    subsample_anomalies,
)
from .segmentation import (CAMVID_CLASSES, CAMVID_VOID, CamVidFrames, augment_volume, load_camvid, load_camvid_frames,
                           load_spine, read_rgb)
from .tables import TABLE_SUFFIXES, read_table, table_kind, write_table

__all__ = [
    "BUNDLED_DIR",
    "CAMVID_CLASSES",
    "CAMVID_VOID",
    "CLASS_TABLES",
    "ClassTable",
    "Dataset",
    "DatasetSpec",
    "TABLE_SUFFIXES",
    "augment_volume",
    "find_data_dir",
    "list_datasets",
    "CamVidFrames",
    "load_camvid",
    "load_camvid_frames",
    "read_rgb",
    "load_class_table",
    "load_dataset",
    "load_spine",
    "read_arff",
    "read_table",
    "register_dataset",
    "subsample_anomalies",
    "table_kind",
    "write_table",
]
