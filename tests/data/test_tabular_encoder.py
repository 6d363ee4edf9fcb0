"""TabularEncoder: every policy (unseen, missing, constant columns, mismatches, NaN) and its errors."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from gnsm.data import EncodedTable, TabularEncoder, one_hot


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "color": ["red", "blue", "red", "green"],
        "flag": [True, False, True, True],
        "size": pd.Categorical(["s", "m", "s", "l"], categories=["l", "m", "s", "xl"]),
        "weight": [1.0, 2.0, 3.0, 4.0],
        "count": [10, 20, 10, 40],
    })


def fit_quiet(enc: TabularEncoder, X) -> TabularEncoder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return enc.fit(X)


# ------------------------------------------------------------------ basic encoding
def test_dtypes_decide_column_roles_and_codes_are_sorted_categories(frame):
    enc = TabularEncoder().fit(frame)
    assert enc.categorical_columns == ["color", "flag", "size"]
    assert enc.numerical_columns == ["weight", "count"]
    assert enc.categories_["color"] == ["blue", "green", "red"]
    assert enc.categories_["flag"] == [False, True]
    # category dtype: declared order, restricted to what occurs ("xl" never does)
    assert enc.categories_["size"] == ["l", "m", "s"]
    assert enc.field_sizes == [4, 3, 4]  # + one reserved unseen slot each
    out = enc.transform(frame)
    assert isinstance(out, EncodedTable)
    assert out.codes.dtype == np.int64 and out.numerical.dtype == np.float32
    np.testing.assert_array_equal(out.codes[:, 0], [2, 0, 2, 1])
    np.testing.assert_array_equal(out.codes[:, 1], [1, 0, 1, 1])
    np.testing.assert_array_equal(out.codes[:, 2], [2, 1, 2, 0])
    w = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(out.numerical[:, 0], (w - w.mean()) / w.std(), rtol=1e-6)
    np.testing.assert_allclose(enc.mean_, [2.5, 20.0])


def test_string_dtype_and_explicit_roles(frame):
    df = frame.astype({"color": "string"})
    enc = TabularEncoder(categorical=["count"], numerical=None).fit(df)
    assert enc.categorical_columns == ["color", "flag", "size", "count"]
    assert enc.categories_["count"] == [10, 20, 40]
    assert enc.numerical_columns == ["weight"]


def test_explicit_role_errors(frame):
    with pytest.raises(ValueError, match=r"categorical: column\(s\) \['nope'\] not in X"):
        TabularEncoder(categorical=["nope"]).fit(frame)
    with pytest.raises(ValueError, match=r"named in both"):
        TabularEncoder(categorical=["weight"], numerical=["weight"]).fit(frame)
    with pytest.raises(ValueError, match=r"numerical: column 'color' has non-numerical dtype"):
        TabularEncoder(numerical=["color"]).fit(frame)
    with pytest.raises(ValueError, match=r"categorical: expected a list of column names"):
        TabularEncoder(categorical="color").fit(frame)


@pytest.mark.parametrize("name,value", [("unseen", "drop"), ("missing", "ignore"),
                                        ("numerical_nan", "zero")])
def test_bad_policy_names_the_argument(frame, name, value):
    with pytest.raises(ValueError, match=rf"^{name}: expected one of"):
        TabularEncoder(**{name: value}).fit(frame)


def test_unsupported_dtype_is_an_error():
    df = pd.DataFrame({"when": pd.to_datetime(["2020-01-01", "2021-01-01"]), "a": ["x", "y"]})
    with pytest.raises(ValueError, match=r"column 'when' has unsupported dtype"):
        TabularEncoder().fit(df)


# ------------------------------------------------------------------ unseen policy
def test_unseen_goes_to_reserved_last_slot(frame):
    enc = TabularEncoder().fit(frame)
    test = frame.copy()
    test["color"] = ["purple", "red", "blue", "green"]
    out = enc.transform(test)
    assert out.codes[0, 0] == enc.field_sizes[0] - 1 == enc.unknown_index("color") == 3
    np.testing.assert_array_equal(out.codes[1:, 0], [2, 0, 1])


def test_unseen_raise_names_column_and_value(frame):
    enc = TabularEncoder(unseen="raise").fit(frame)
    assert enc.field_sizes == [3, 2, 3]  # no reserved slot under "raise"
    assert enc.unknown_index("color") is None
    test = frame.copy()
    test["color"] = ["red", "red", "purple", "red"]
    with pytest.raises(ValueError, match=r"column 'color'.*not seen at fit time, first 'purple' at row 2"):
        enc.transform(test)


# ------------------------------------------------------------------ missing policy
def test_missing_values_become_one_category():
    df = pd.DataFrame({"a": ["x", None, "?", "y", np.nan], "b": ["p", "q", "p", "q", "p"]})
    enc = TabularEncoder().fit(df)
    assert enc.categories_["a"] == ["x", "y", None]  # None = the missing category
    out = enc.transform(df)
    np.testing.assert_array_equal(out.codes[:, 0], [0, 2, 2, 1, 2])
    assert enc.field_sizes == [4, 3]


def test_missing_values_are_configurable():
    df = pd.DataFrame({"a": ["x", "?", "NA", "y"]})
    enc = TabularEncoder(missing_values=["NA"]).fit(df)
    assert enc.categories_["a"] == ["?", "x", "y", None]  # '?' is a plain value now


def test_missing_raise():
    df = pd.DataFrame({"a": ["x", "?", "y"]})
    with pytest.raises(ValueError, match=r"column 'a' has 1 missing value\(s\) \(first at row 1\)"):
        TabularEncoder(missing="raise").fit(df)
    enc = TabularEncoder(missing="raise").fit(pd.DataFrame({"a": ["x", "y"]}))
    with pytest.raises(ValueError, match=r"column 'a' has 1 missing"):
        enc.transform(pd.DataFrame({"a": [None, "y"]}))


def test_missing_not_seen_at_fit_is_unseen():
    enc = TabularEncoder().fit(pd.DataFrame({"a": ["x", "y"]}))
    assert enc.transform(pd.DataFrame({"a": [None, "y"]})).codes[:, 0].tolist() == [2, 1]
    enc = TabularEncoder(unseen="raise").fit(pd.DataFrame({"a": ["x", "y"]}))
    with pytest.raises(ValueError, match=r"not seen at fit time"):
        enc.transform(pd.DataFrame({"a": [None, "y"]}))


# ------------------------------------------------------------------ constant columns
def test_single_valued_columns_are_kept_by_default(frame):
    df = frame.assign(const_cat="k", const_num=5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is dropped, so nothing to warn about
        enc = TabularEncoder().fit(df)
    assert enc.constant_columns_ == ["const_cat", "const_num"] and enc.dropped_columns_ == []
    j = enc.categorical_columns.index("const_cat")
    assert enc.field_sizes[j] == 2  # the one value + the reserved unseen slot
    d = enc.numerical_columns.index("const_num")
    assert enc.scale_[d] == pytest.approx(0.05)  # 1 % of |5.0|
    test = df.head(3).assign(const_cat=["k", "other", "k"], const_num=[5.0, 5.0, 5.5])
    out = enc.transform(test)
    assert out.codes[:, j].tolist() == [0, 1, 0]  # a different value lands in the unseen slot
    np.testing.assert_allclose(out.numerical[:, d], [0.0, 0.0, 10.0])
    # round trip keeps the policy and the kept columns
    again = TabularEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert again.constant_columns_ == enc.constant_columns_ and again.constant == "keep"
    np.testing.assert_array_equal(again.transform(test).codes, out.codes)


def test_constant_code_column_is_kept_with_its_code():
    enc = TabularEncoder().fit(np.array([[0, 3], [1, 3], [2, 3]]))
    assert enc.constant_columns_ == [1] and enc.field_sizes == [4, 5]
    np.testing.assert_array_equal(enc.transform(np.array([[0, 3], [0, 2], [0, 9]])).codes[:, 1], [3, 2, 4])


def test_state_without_constant_policy_reads_as_drop(frame):
    with pytest.warns(UserWarning):
        state = TabularEncoder(constant="drop").fit(frame.assign(k="k")).to_dict()
    del state["params"]["constant"], state["constant_columns"]
    enc = TabularEncoder.from_dict(state)
    assert enc.constant == "drop" and enc.dropped_columns_ == ["k"] and enc.constant_columns_ == []


def test_bad_constant_policy_is_named():
    with pytest.raises(ValueError, match="constant: expected one of"):
        TabularEncoder(constant="ignore").fit(pd.DataFrame({"a": ["x", "y"]}))


def test_single_valued_columns_are_dropped_with_warning(frame):
    df = frame.assign(const_cat="k", const_num=5.0)
    with pytest.warns(UserWarning, match=r"dropping single-valued column\(s\) \['const_cat', 'const_num'\]"):
        enc = TabularEncoder(constant="drop").fit(df)
    assert enc.dropped_columns_ == ["const_cat", "const_num"]
    assert "const_cat" not in enc.categorical_columns and "const_num" not in enc.numerical_columns
    # dropped columns may be present or absent at transform time
    a = enc.transform(df)
    b = enc.transform(frame)
    np.testing.assert_array_equal(a.codes, b.codes)


def test_all_columns_single_valued_is_an_error():
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="every column is single-valued"):
        TabularEncoder(constant="drop").fit(pd.DataFrame({"a": ["x", "x"], "b": [1.0, 1.0]}))


# ------------------------------------------------------------------ fit/transform mismatches
def test_column_order_is_restored_by_name(frame):
    enc = TabularEncoder().fit(frame)
    shuffled = frame[["count", "size", "weight", "flag", "color"]]
    a, b = enc.transform(frame), enc.transform(shuffled)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.numerical, b.numerical)


def test_missing_and_extra_columns_are_listed(frame):
    enc = TabularEncoder().fit(frame)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['weight'\]"):
        enc.transform(frame.drop(columns=["weight"]))
    with pytest.raises(ValueError, match=r"unexpected column\(s\) \['label'\]"):
        enc.transform(frame.assign(label=1))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['color'\] and unexpected column\(s\) \['colour'\]"):
        enc.transform(frame.rename(columns={"color": "colour"}))


def test_dtype_mismatch_is_an_error(frame):
    enc = TabularEncoder().fit(frame)
    with pytest.raises(ValueError, match=r"column 'weight' was fitted as numerical but has dtype"):
        enc.transform(frame.assign(weight=["a", "b", "c", "d"]))
    with pytest.raises(ValueError, match=r"column 'color' was fitted on string values but got number"):
        enc.transform(frame.assign(color=[1, 2, 1, 2]))
    with pytest.raises(ValueError, match=r"fitted on a DataFrame"):
        enc.transform(np.zeros((2, 5), dtype=np.int64))


# ------------------------------------------------------------------ numerical NaN
def test_numerical_nan_raise_and_impute():
    df = pd.DataFrame({"a": ["x", "y", "x"], "v": [1.0, np.nan, 3.0]})
    with pytest.raises(ValueError, match=r"numerical column 'v' has 1 NaN value\(s\) \(first at row 1\)"):
        TabularEncoder().fit(df)
    enc = TabularEncoder(numerical_nan="impute").fit(df)
    assert enc.mean_[0] == pytest.approx(2.0)
    out = enc.transform(df)
    assert out.numerical[1, 0] == 0.0  # the training mean standardizes to 0
    clean = TabularEncoder().fit(df.fillna(2.0))
    with pytest.raises(ValueError, match=r"numerical column 'v' has 1 NaN"):
        clean.transform(df)
    with pytest.raises(ValueError, match="infinite"):
        TabularEncoder().fit(df.fillna(np.inf))


# ------------------------------------------------------------------ shapes and empties
def test_all_numeric_table_is_allowed():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.1, 0.2]})
    out = TabularEncoder().fit_transform(df)
    assert out.codes.shape == (3, 0) and out.numerical.shape == (3, 2)


def test_empty_tables_are_errors():
    with pytest.raises(ValueError, match=r"X: empty table \(0 rows"):
        TabularEncoder().fit(pd.DataFrame({"a": pd.Series([], dtype=object)}))
    with pytest.raises(ValueError, match="no columns"):
        TabularEncoder().fit(pd.DataFrame(index=range(3)))
    enc = TabularEncoder().fit(pd.DataFrame({"a": ["x", "y"]}))
    with pytest.raises(ValueError, match="empty table"):
        enc.transform(pd.DataFrame({"a": pd.Series([], dtype=object)}))
    with pytest.raises(RuntimeError, match="not fitted"):
        TabularEncoder().transform(pd.DataFrame({"a": ["x"]}))


# ------------------------------------------------------------------ integer code arrays
def test_integer_array_is_taken_as_codes():
    X = np.array([[0, 2, 1], [1, 0, 1], [3, 1, 1]])
    with pytest.warns(UserWarning, match=r"\[2\]"):
        enc = TabularEncoder(constant="drop").fit(X)
    assert enc.categorical_columns == [0, 1] and enc.dropped_columns_ == [2]
    assert enc.field_sizes == [5, 4]  # max + 1, + the unseen slot
    out = enc.transform(np.array([[2, 1, 7], [9, 5, 0]]))
    np.testing.assert_array_equal(out.codes, [[2, 1], [4, 3]])  # above the fitted max -> unseen
    with pytest.raises(ValueError, match="expected 3 code columns"):
        enc.transform(np.array([[1, 1]]))
    with pytest.raises(ValueError, match=r"codes must be >= 0, found -1 in column 1"):
        TabularEncoder().fit(np.array([[0, -1], [1, 0]]))
    with pytest.raises(ValueError, match="integer category codes"):
        TabularEncoder().fit(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="only apply to DataFrames"):
        TabularEncoder(categorical=[0]).fit(X)


def test_tensor_input_is_accepted():
    torch = pytest.importorskip("torch")
    X = torch.tensor([[0, 1], [1, 0], [1, 1]])
    out = TabularEncoder().fit_transform(X)
    np.testing.assert_array_equal(out.codes, X.numpy())


# ------------------------------------------------------------------ serialization and one-hot
def test_state_round_trips_through_json(frame):
    df = frame.assign(color=["red", None, "?", "green"])
    enc = fit_quiet(TabularEncoder(numerical_nan="impute"), df)
    state = json.loads(json.dumps(enc.to_dict()))
    enc2 = TabularEncoder.from_dict(state)
    test = df.assign(color=["green", "purple", None, "red"], weight=[np.nan, 1.0, 2.0, 9.0])
    a, b = enc.transform(test), enc2.transform(test)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.numerical, b.numerical)
    assert enc2.field_sizes == enc.field_sizes and enc2.categories_ == enc.categories_
    codes = fit_quiet(TabularEncoder(), np.array([[0, 1], [2, 0]]))
    again = TabularEncoder.from_dict(json.loads(json.dumps(codes.to_dict())))
    np.testing.assert_array_equal(again.transform(np.array([[5, 1]])).codes, [[3, 1]])
    with pytest.raises(ValueError, match="format"):
        TabularEncoder.from_dict({"format": "other"})


def test_one_hot_layout():
    codes = np.array([[0, 2], [1, 0]])
    out = one_hot(codes, [2, 3])
    np.testing.assert_array_equal(out, [[1, 0, 0, 0, 1], [0, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match="values must lie in"):
        one_hot(np.array([[2, 0]]), [2, 3])
