"""The one table reader / writer: suffix rule, duplicate headers, empty tables, writing by suffix."""
from __future__ import annotations

import pandas as pd
import pytest

from gnsm.datasets import BUNDLED_DIR, load_dataset, read_table, table_kind, write_table


@pytest.mark.parametrize("name, kind", [("a.csv", "csv"), ("A.CSV.GZ", "csv"), ("a.txt", "csv"), ("a.tsv", "tsv"),
                                        ("a.parquet", "parquet"), ("a.pq", "parquet"), ("a.arff", "arff")])
def test_table_kind_by_suffix(name, kind):
    assert table_kind(name) == kind


def test_table_kind_rejects_unknown_and_unwritable_suffixes():
    with pytest.raises(ValueError, match=r"out: unsupported file type 'x.xlsx'"):
        table_kind("x.xlsx", "out")
    with pytest.raises(ValueError, match="unsupported file type 'x.arff'"):
        table_kind("x.arff", write=True)


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_duplicate_header_is_a_named_error(tmp_path, suffix, sep):
    path = tmp_path / f"dup{suffix}"
    path.write_text(sep.join(["a", "b", "a"]) + "\n" + sep.join(["1", "2", "3"]) + "\n")
    with pytest.raises(ValueError, match=r"input: .*duplicate column name\(s\) \['a'\]"):
        read_table(path, "input")
    with pytest.raises(ValueError, match="duplicate column"):
        load_dataset(path, label_col="b", anomaly_value="2")


def test_unnamed_columns_are_not_duplicates(tmp_path):
    path = tmp_path / "index.csv"
    pd.DataFrame({"a": ["x", "y"]}).to_csv(path)  # a leading unnamed index column
    assert list(read_table(path).columns) == ["Unnamed: 0", "a"]


def test_empty_and_header_only_tables(tmp_path):
    (tmp_path / "e.csv").write_text("")
    (tmp_path / "h.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="is empty"):
        read_table(tmp_path / "e.csv")
    with pytest.raises(ValueError, match="has no rows"):
        read_table(tmp_path / "h.csv")
    with pytest.raises(FileNotFoundError, match="path: file not found"):
        read_table(tmp_path / "missing.csv")


def test_arff_with_nominal_columns():
    frame, nominal = read_table(BUNDLED_DIR / "car.arff", with_nominal=True)
    assert frame.shape == (1728, 7) and "class" in nominal
    assert read_table(BUNDLED_DIR / "car.arff").equals(frame)  # without with_nominal: the frame alone


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".tsv", ".parquet"])
def test_write_then_read_by_suffix(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"a": ["x", "y"], "b": [1.5, 2.5]})
    path = write_table(frame, tmp_path / "sub" / f"t{suffix}")
    assert path.parent.is_dir()
    pd.testing.assert_frame_equal(read_table(path), frame)
    if suffix == ".tsv":
        assert path.read_text().splitlines()[0] == "a\tb"


def test_write_rejects_bad_targets(tmp_path):
    frame = pd.DataFrame({"a": [1]})
    with pytest.raises(ValueError, match="unsupported file type 'x.xlsx'"):
        write_table(frame, tmp_path / "x.xlsx")
    assert not (tmp_path / "x.xlsx").exists()
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        write_table(frame, tmp_path / "d.csv")
