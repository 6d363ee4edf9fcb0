"""BaseDetector contract (fit / threshold / predict / proba / save / load) and input validation."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from gnsm.detectors import BaseDetector
from gnsm.detectors.validation import as_float_tensor, check_labels


class CentroidDistance(BaseDetector):
    """Toy detector: distance to the training mean, scaled by a parameter."""

    def __init__(self, power: float = 1.0, contamination: float = 0.1, device: str = "cpu") -> None:
        self.power = power
        self.contamination = contamination
        self.device = device

    def _fit(self, X, y=None):
        x = as_float_tensor(X, dtype=torch.float64)
        self.centre_ = x.mean(0).to(self.device)
        self.n_features_in_ = x.shape[1]
        return None

    def _score(self, X):
        x = as_float_tensor(X, dtype=torch.float64).to(self.device)
        return ((x - self.centre_).norm(dim=1) ** self.power).cpu().numpy()

    def _state_tensors(self):
        return {"centre": self.centre_}

    def _state_meta(self):
        return {"n_features_in": self.n_features_in_}

    def _load_state(self, tensors, meta):
        self.centre_ = tensors["centre"].to(self.device)
        self.n_features_in_ = meta["n_features_in"]


class ReturnsTrainingScores(CentroidDistance):
    def _fit(self, X, y=None):
        super()._fit(X, y)
        return np.arange(len(X), dtype=np.float64)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(200, 3)), rng.normal(size=(50, 3)) * 3


def test_fit_sets_scores_threshold_labels(data):
    X, _ = data
    det = CentroidDistance(contamination=0.1).fit(X)
    assert det.decision_scores_.shape == (200,) and det.decision_scores_.dtype == np.float64
    assert det.threshold_ == pytest.approx(np.percentile(det.decision_scores_, 90))
    assert det.labels_.dtype == np.int64 and set(np.unique(det.labels_)) == {0, 1}
    assert det.labels_.sum() == 20
    np.testing.assert_array_equal(det.labels_, det.predict(X))
    np.testing.assert_array_equal(det.fit_predict(X), det.labels_)


def test_fit_may_return_training_scores(data):
    X, _ = data
    det = ReturnsTrainingScores().fit(X)
    np.testing.assert_array_equal(det.decision_scores_, np.arange(200.0))


def test_predict_proba_linear_and_unify(data):
    X, Xt = data
    det = CentroidDistance().fit(X)
    for method in ("linear", "unify"):
        p = det.predict_proba(Xt, method=method)
        assert p.shape == (50, 2)
        assert (p >= 0).all() and (p <= 1).all()
        np.testing.assert_allclose(p.sum(1), 1.0)
    train_p = det.predict_proba(X)[:, 1]
    assert train_p.min() == 0.0 and train_p.max() == 1.0
    # monotone in the score
    s = det.decision_function(Xt)
    order = np.argsort(s)
    assert (np.diff(det.predict_proba(Xt, "unify")[order, 1]) >= -1e-12).all()
    with pytest.raises(ValueError, match="method"):
        det.predict_proba(Xt, method="softmax")


@pytest.mark.parametrize("bad", [0, 0.0, 0.6, -0.1, "0.1", None, True])
def test_contamination_validated(bad, data):
    with pytest.raises(ValueError, match="contamination"):
        CentroidDistance(contamination=bad).fit(data[0])


def test_init_does_no_work_and_params_round_trip():
    det = CentroidDistance(power=2.0, contamination=0.2)
    assert det.get_params() == {"power": 2.0, "contamination": 0.2, "device": "cpu"}
    det.set_params(power=3.0)
    assert det.power == 3.0
    twin = clone(det)
    assert twin.get_params() == det.get_params() and twin is not det
    CentroidDistance(contamination=5.0)  # invalid values are only checked in fit (sklearn convention)


def test_not_fitted_errors(tmp_path):
    det = CentroidDistance()
    for call in (lambda: det.decision_function(np.zeros((2, 3))), lambda: det.predict(np.zeros((2, 3))),
                 lambda: det.predict_proba(np.zeros((2, 3))), lambda: det.save(tmp_path / "m")):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()


def test_save_load_round_trip(tmp_path, data):
    X, Xt = data
    det = CentroidDistance(power=1.5, contamination=0.05).fit(X)
    folder = det.save(tmp_path / "model")
    assert sorted(os.listdir(folder)) == ["meta.json", "weights.pt"]  # no temp files left behind
    meta = json.loads((folder / "meta.json").read_text())
    import gnsm
    assert meta["class"].endswith("CentroidDistance") and meta["gnsm_version"] == gnsm.__version__
    assert meta["params"] == {"power": 1.5, "contamination": 0.05, "device": "cpu"}
    tensors = torch.load(folder / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())

    for loaded in (CentroidDistance.load(folder), BaseDetector.load(folder)):
        assert type(loaded) is CentroidDistance
        assert loaded.get_params() == det.get_params()
        np.testing.assert_array_equal(loaded.decision_function(Xt), det.decision_function(Xt))
        np.testing.assert_array_equal(loaded.decision_scores_, det.decision_scores_)
        np.testing.assert_array_equal(loaded.labels_, det.labels_)
        assert loaded.threshold_ == det.threshold_
        np.testing.assert_array_equal(loaded.predict_proba(Xt, "unify"), det.predict_proba(Xt, "unify"))
    det.save(folder)  # overwriting an existing checkpoint works


def test_load_checks(tmp_path, data):
    det = CentroidDistance().fit(data[0])
    folder = det.save(tmp_path / "m")
    with pytest.raises(TypeError, match="ReturnsTrainingScores"):
        ReturnsTrainingScores.load(folder)
    with pytest.raises(FileNotFoundError):
        CentroidDistance.load(tmp_path / "missing")
    torch.save({"centre": torch.zeros(3)}, folder / "weights.pt")
    with pytest.raises(ValueError, match="checksum"):
        CentroidDistance.load(folder)


def test_load_overrides_and_reserved_keys(tmp_path, data):
    det = CentroidDistance().fit(data[0])
    loaded = CentroidDistance.load(det.save(tmp_path / "m"), device="cpu", power=2.0)
    assert loaded.power == 2.0

    class BadKeys(CentroidDistance):
        def _state_tensors(self):
            return {"_base.decision_scores_": torch.zeros(1)}

    with pytest.raises(ValueError, match="reserved"):
        BadKeys().fit(data[0]).save(tmp_path / "bad")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
def test_gpu_model_loads_on_cpu(tmp_path, data):
    X, Xt = data
    det = CentroidDistance(device="cuda").fit(X)
    folder = det.save(tmp_path / "gpu")
    loaded = CentroidDistance.load(folder, device="cpu")
    assert loaded.centre_.device.type == "cpu"
    np.testing.assert_allclose(loaded.decision_function(Xt), det.decision_function(Xt), rtol=1e-12)


# ---------------------------------------------------------------- input validation helpers

def test_as_float_tensor_accepts_common_containers():
    arr = np.arange(6, dtype=np.int64).reshape(3, 2)
    for X in (arr, torch.as_tensor(arr), arr.tolist(), pd.DataFrame(arr, columns=["a", "b"])):
        t = as_float_tensor(X)
        assert t.dtype == torch.float32 and t.shape == (3, 2)
        assert torch.equal(t, torch.as_tensor(arr, dtype=torch.float32))
    assert as_float_tensor(arr, dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("X,match", [
    (np.array([[1.0, np.nan], [0.0, 1.0]]), r"NaN.*index \(0, 1\)"),
    (np.array([[1.0, 2.0], [np.inf, 1.0]]), r"inf.*index \(1, 0\)"),
    (torch.tensor([[1.0, float("nan")]]), "NaN"),
    (np.zeros(5), "2-D"),
    (np.zeros((2, 3, 4)), "2-D"),
    (np.zeros((0, 3)), "empty"),
    (np.zeros((3, 0)), "no features"),
    (pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}), r"non-numerical columns \['b'\]"),
    (np.array([["a", "b"]]), "numerical"),
])
def test_as_float_tensor_errors(X, match):
    with pytest.raises(ValueError, match=match):
        as_float_tensor(X, "X")


def test_as_float_tensor_ndim_option():
    assert as_float_tensor(np.zeros((2, 3, 4, 5)), ndim=(4, 5)).shape == (2, 3, 4, 5)


def test_check_labels():
    assert check_labels(["a", "b"], 2).tolist() == ["a", "b"]
    assert check_labels(pd.Series([1, 2, 3]), 3).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="expected 3 labels"):
        check_labels([0, 1], 3)
    with pytest.raises(ValueError, match="1-D"):
        check_labels(np.zeros((2, 2)), 2)
    with pytest.raises(ValueError, match="missing"):
        check_labels([0.0, np.nan], 2)
    with pytest.raises(ValueError, match="missing"):
        check_labels(np.array(["a", None], dtype=object), 2)


# ---------------------------------------------------------------- extra fit / scoring inputs

class Shifted(CentroidDistance):
    """Takes a fit input (``offset``) and a scoring input (``shift``) as keyword arguments."""

    def _fit(self, X, y=None, *, offset=0.0):
        super()._fit(X, y)
        self.centre_ = self.centre_ + offset
        return None

    def _score(self, X, *, shift=0.0):
        return super()._score(X) + shift


def test_fit_and_score_params_pass_through_every_scoring_method(data):
    X, Xt = data
    assert Shifted.fit_param_names() == ("offset",) and Shifted.score_param_names() == ("shift",)
    det = Shifted().fit(X, offset=1.0)
    assert torch.allclose(det.centre_, torch.as_tensor(X).mean(0) + 1.0)
    base = det.decision_function(Xt)
    np.testing.assert_allclose(det.decision_function(Xt, shift=2.0), base + 2.0)
    np.testing.assert_array_equal(det.predict(Xt, shift=1e9), np.ones(len(Xt)))
    assert (det.predict_proba(Xt, shift=1e9)[:, 1] == 1.0).all()
    assert (det.predict_proba(Xt, "unify", shift=-1e9)[:, 1] == 0.0).all()
    np.testing.assert_array_equal(Shifted().fit_predict(X, offset=1.0), det.labels_)


def test_unknown_extra_inputs_are_named(data):
    X, Xt = data
    with pytest.raises(TypeError, match=r"fit: unexpected keyword argument\(s\) \['X_val'\]; accepted: \['offset'\]"):
        Shifted().fit(X, X_val=X)
    det = CentroidDistance().fit(X)
    with pytest.raises(TypeError, match=r"decision_function: unexpected keyword argument\(s\) \['cond'\]"):
        det.predict_proba(Xt, cond=None)


# ---------------------------------------------------------------- devices

@pytest.mark.parametrize("device, match", [
    ("tpu", "expected 'auto', 'cpu', 'cuda'"),
    ("meta", "not supported"),
    (3, "expected 'auto'"),
    ("cuda:99", "CUDA"),
])
def test_resolve_device_names_the_problem(device, match):
    from gnsm.detectors import resolve_device
    with pytest.raises(ValueError, match=f"device: .*{match}"):
        resolve_device(device)


def test_resolve_device_accepts_cpu_and_auto():
    from gnsm.detectors import resolve_device
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_resolve_device_cuda_without_gpu():
    from gnsm.detectors import resolve_device
    with pytest.raises(ValueError, match="no CUDA device is available"):
        resolve_device("cuda")


class FailsAfterCentre(CentroidDistance):
    """Replaces its fitted centre, then fails when ``fail`` is set (a refit that breaks half-way, e.g. killed
    in training)."""

    fail = True

    def _fit(self, X, y=None):
        super()._fit(X, y)
        if self.fail:
            self.extra_ = "half-made"
            raise KeyboardInterrupt
        return None


def test_a_failed_refit_leaves_the_fitted_detector_unchanged(data):
    X, Xt = data
    det = FailsAfterCentre()
    det.fail = False
    det.fit(X)
    before = det.decision_function(Xt)
    det.fail = True
    with pytest.raises(KeyboardInterrupt):
        det.fit(X * 10 + 5)
    assert not hasattr(det, "extra_")
    np.testing.assert_array_equal(det.decision_function(Xt), before)
    with pytest.raises(ValueError, match="contamination"):  # a parameter error keeps the fitted state too
        det.set_params(contamination=2.0).fit(X * 10 + 5)
    np.testing.assert_array_equal(det.decision_function(Xt), before)
    first = FailsAfterCentre()
    with pytest.raises(KeyboardInterrupt):
        first.fit(X)
    assert vars(first) == vars(FailsAfterCentre())  # a failed first fit leaves it unfitted


# ---------------------------------------------------------------- atomic saves and corrupt folders

class MetaHolder(CentroidDistance):
    """Stores an arbitrary value in meta.json (to make a save fail after the weights were ready)."""

    def __init__(self, power=1.0, contamination=0.1, device="cpu", extra=None):
        super().__init__(power, contamination, device)
        self.extra = extra

    def _state_meta(self):
        return {**super()._state_meta(), "extra": self.extra}


def test_failed_save_keeps_the_model_already_there(tmp_path, data, monkeypatch):
    X, Xt = data
    good = CentroidDistance().fit(X)
    folder = good.save(tmp_path / "m")
    before = good.decision_function(Xt)
    bad = MetaHolder(extra=pd.Timestamp("2024-01-01")).fit(X * 5)
    with pytest.raises(TypeError, match="JSON-serializable"):
        bad.save(folder)
    np.testing.assert_array_equal(BaseDetector.load(folder).decision_function(Xt), before)

    def killed(*args, **kwargs):  # the process dies while the new weights are written
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        CentroidDistance().fit(X * 5).save(folder)
    monkeypatch.undo()
    np.testing.assert_array_equal(BaseDetector.load(folder).decision_function(Xt), before)
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temporary sibling left behind


def test_load_names_the_model_a_killed_save_set_aside(tmp_path, data):
    folder = CentroidDistance().fit(data[0]).save(tmp_path / "m")
    aside = tmp_path / ".m.k1ll.old"
    os.replace(folder, aside)  # the state a SIGKILL between the two renames of save leaves
    with pytest.raises(FileNotFoundError, match=r"interrupted.*\.m\.k1ll\.old: rename that folder to m"):
        BaseDetector.load(folder)
    os.replace(aside, folder)
    BaseDetector.load(folder)


def test_save_refuses_a_folder_with_other_files(tmp_path, data):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds files"):
        CentroidDistance().fit(data[0]).save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        CentroidDistance().fit(data[0]).save(tmp_path / "file")


def _edit_meta(folder, edit):
    meta = json.loads((folder / "meta.json").read_text())
    edit(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


def test_edited_meta_is_refused(tmp_path, data):
    folder = CentroidDistance().fit(data[0]).save(tmp_path / "m")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps(meta, indent=4, sort_keys=False))  # layout does not matter
    CentroidDistance.load(folder)
    _edit_meta(folder, lambda m: m.update(threshold_=m["threshold_"] + 1.0))
    with pytest.raises(ValueError, match=r"meta\.json: content differs from its recorded checksum"):
        CentroidDistance.load(folder)


@pytest.mark.parametrize("corrupt, file, match", [
    (lambda f: (f / "meta.json").write_bytes((f / "meta.json").read_bytes()[:40]), "meta.json",
     "not valid JSON.*truncated"),
    (lambda f: (f / "meta.json").write_bytes(b'{"format": "\xff\xfe"}'), "meta.json", "not UTF-8"),
    (lambda f: (f / "meta.json").write_text("[1, 2]"), "meta.json", "expected a JSON object, got a JSON list"),
    (lambda f: _edit_meta(f, lambda m: m.pop("state")), "meta.json", r"missing key\(s\) \['state'\]"),
    (lambda f: _edit_meta(f, lambda m: m.update(format=99)), "meta.json", "unsupported checkpoint format 99"),
    (lambda f: (f / "weights.pt").write_bytes((f / "weights.pt").read_bytes()[:100]), "weights.pt",
     "checksum differs.*truncated"),
])
def test_corrupt_folders_raise_one_named_error(tmp_path, data, corrupt, file, match):
    folder = CentroidDistance().fit(data[0]).save(tmp_path / "m")
    corrupt(folder)
    with pytest.raises(ValueError, match=match) as info:
        BaseDetector.load(folder)
    assert str(folder / file) in str(info.value)


def test_unreadable_weights_with_matching_checksum(tmp_path, data):
    """A weights file that is not a torch archive is named even when meta.json was made to match it."""
    import hashlib
    folder = CentroidDistance().fit(data[0]).save(tmp_path / "m")
    (folder / "weights.pt").write_bytes(b"not a zip archive")
    digest = hashlib.sha256(b"not a zip archive").hexdigest()
    meta = json.loads((folder / "meta.json").read_text())
    meta["format"], meta["weights_sha256"] = 1, digest  # format 1: no digest of meta.json itself
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"weights\.pt: cannot be read as saved weights"):
        BaseDetector.load(folder)
