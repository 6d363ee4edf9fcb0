"""Datasets: a registry of the development sets and a loader for any CSV/ARFF/Parquet file."""
from __future__ import annotations

from .arff import read_arff
from .registry import (
    Dataset,
    DatasetSpec,
    find_data_dir,
    list_datasets,
    load_dataset,
    register_dataset,
    subsample_anomalies,
)

__all__ = [
    "Dataset",
    "DatasetSpec",
    "find_data_dir",
    "list_datasets",
    "load_dataset",
    "read_arff",
    "register_dataset",
    "subsample_anomalies",
]
