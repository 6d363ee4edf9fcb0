"""HGADDetector / HGADModel / fit_hgad_head: contract, errors, checkpoints, and a real-data AUROC floor."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from gnsm.detectors import BaseDetector, HGADDetector
from gnsm.detectors.heads import HGADModel, choose_pseudo_classes, fit_hgad_head
from gnsm.flows import positional_encoding_2d, positions_as_rows

# Small and short: each fit takes well under a second on one core.
FAST = dict(n_blocks=2, hidden_dim=16, stage1_epochs=3, stage2_epochs=2, batch_size=64, device="cpu",
            random_state=0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine thrash."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(old)


def blobs(n_per=60, dim=6, n_classes=3, seed=0, spread=6.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * spread
    X = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centres])
    y = np.repeat(np.arange(n_classes), n_per)
    return X, y


def test_fit_contract_with_labels():
    X, y = blobs()
    det = HGADDetector(contamination=0.1, **FAST).fit(X, y)
    assert det.decision_scores_.shape == (180,) and np.isfinite(det.decision_scores_).all()
    assert det.threshold_ == pytest.approx(np.percentile(det.decision_scores_, 90))
    assert det.labels_.sum() == 18
    np.testing.assert_array_equal(det.predict(X), det.labels_)
    assert det.predict_proba(X).shape == (180, 2)
    assert det.n_classes_ == 3 and det.classes_.tolist() == [0, 1, 2] and det.n_features_in_ == 6
    far = X[:5] + 40.0
    assert det.decision_function(far).min() > det.decision_scores_.max()


def test_string_labels_dataframe_and_tensor_inputs():
    X, y = blobs(n_per=20)
    names = np.array(["cat", "dog", "eel"])[y]
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    det = HGADDetector(**FAST).fit(frame, names)
    assert det.classes_.tolist() == ["cat", "dog", "eel"]
    np.testing.assert_allclose(det.decision_function(torch.as_tensor(X)), det.decision_scores_, rtol=1e-5)


def test_pseudo_classes_auto_finds_blobs_and_single_class():
    X, _ = blobs(n_per=50, n_classes=4, spread=10.0)
    labels, info = choose_pseudo_classes((X - X.mean(0)) / X.std(0), "auto", max_auto_classes=6, seed=0)
    assert info["k"] == 4 and len(np.unique(labels)) == 4
    det = HGADDetector(n_classes="auto", max_auto_classes=6, **FAST).fit(X)
    assert det.n_classes_ == 4 and det.classes_ is None
    assert HGADDetector(n_classes=1, **FAST).fit(X).n_classes_ == 1
    assert HGADDetector(n_classes=None, **FAST).fit(X).n_classes_ == 1
    assert HGADDetector(n_classes=3, **FAST).fit(X).n_classes_ == 3


def test_more_classes_than_twice_the_dimension():
    # C = 7 > 2 D = 4: the published centre init would divide by zero here.
    X, y = blobs(n_per=15, dim=2, n_classes=7)
    det = HGADDetector(**FAST).fit(X, y)
    mu = det.head_.model.prior.mu.detach()
    assert torch.isfinite(mu).all() and torch.pdist(mu).min() > 0.1
    assert np.isfinite(det.decision_scores_).all()


@pytest.mark.parametrize("X,y,match", [
    (np.array([[0.0, np.nan]] * 10), None, "NaN"),
    (np.array([[0.0, np.inf]] * 10), None, "inf"),
    (np.zeros((10, 2)), np.zeros(9), "expected 10 labels"),
    (np.zeros((0, 2)), None, "empty"),
    (np.zeros(10), None, "2-D"),
    (np.zeros((1, 2)), None, "at least 2 samples"),
])
def test_bad_fit_input(X, y, match):
    with pytest.raises(ValueError, match=match):
        HGADDetector(**FAST).fit(X, y)


def test_fewer_samples_than_classes_and_bad_options():
    X = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(ValueError, match="need at least 5 samples"):
        HGADDetector(n_classes=5, **FAST).fit(X)
    with pytest.raises(ValueError, match="n_classes"):
        HGADDetector(n_classes="many", **FAST).fit(X)
    with pytest.raises(ValueError, match="n_intra_centers"):
        HGADDetector(n_intra_centers=0, **FAST).fit(X)
    with pytest.raises(ValueError, match="contamination"):
        HGADDetector(contamination=0.9, **FAST).fit(X)


def test_bad_score_input():
    X, y = blobs(n_per=20)
    det = HGADDetector(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="expected 6 features"):
        det.decision_function(X[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        det.decision_function(np.where(np.eye(60, 6) > 0, np.nan, X))


def test_save_load_round_trip_exact(tmp_path):
    X, y = blobs(n_per=30)
    Xt = X + np.random.default_rng(1).normal(size=X.shape)
    det = HGADDetector(n_intra_centers=2, **FAST).fit(X, np.array(["a", "b", "c"])[y])
    folder = det.save(tmp_path / "hgad")
    for loaded in (HGADDetector.load(folder), BaseDetector.load(folder)):
        assert isinstance(loaded, HGADDetector)
        assert loaded.get_params() == det.get_params()
        np.testing.assert_array_equal(loaded.decision_function(Xt), det.decision_function(Xt))
        np.testing.assert_array_equal(loaded.labels_, det.labels_)
        assert loaded.threshold_ == det.threshold_ and loaded.classes_.tolist() == ["a", "b", "c"]
    weights = torch.load(folder / "weights.pt", weights_only=True, map_location="cpu")
    assert all(isinstance(v, torch.Tensor) for v in weights.values())


def test_clone_and_params():
    det = HGADDetector(n_classes=4, lr=3e-4, **FAST)
    twin = clone(det)
    assert twin.get_params() == det.get_params()
    assert not hasattr(twin, "head_")
    assert det.set_params(lambda2=50.0).lambda2 == 50.0


def test_reproducible_with_random_state():
    X, y = blobs(n_per=20)
    a = HGADDetector(**FAST).fit(X, y).decision_scores_
    b = HGADDetector(**FAST).fit(X, y).decision_scores_
    np.testing.assert_array_equal(a, b)


def test_model_log_prob_and_head_score_agree():
    X, y = blobs(n_per=20)
    head = fit_hgad_head(X, y, n_intra_centers=2, **FAST)
    assert head.level == "full"
    x = head.standardize(X)
    with torch.no_grad():
        nll = -head.model.log_prob(x).double().numpy() / 6
        entropy = head.model.prior.class_entropy(head.model(x)[0]).double().numpy()
    np.testing.assert_allclose(head.score(X), nll + entropy, rtol=1e-5)  # score_entropy_weight = 1
    head.score_entropy_weight = 0.0
    np.testing.assert_allclose(head.score(X), nll, rtol=1e-5)
    single_stage = fit_hgad_head(X, y, **{**FAST, "stage2_epochs": 0})
    assert single_stage.level == "inter"


def test_trained_flow_inverts():
    X, y = blobs(n_per=20)
    head = fit_hgad_head(X, y, **FAST)
    x = head.standardize(X)
    with torch.no_grad():
        z, _ = head.model(x)
        assert (head.model.flow.inverse(z) - x).abs().max() < 1e-4


@pytest.mark.parametrize("stage", [1, 2])
def test_gradients_finite_in_each_stage(stage):
    torch.manual_seed(0)
    model = HGADModel(5, n_classes=3, n_intra_centers=3, cond_dim=4, n_blocks=2, hidden_dim=8)
    x, cond = torch.randn(16, 5), torch.randn(16, 4)
    model.losses(x, torch.arange(16) % 3, cond, stage=stage)["total"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    assert grads["prior.mu"].abs().sum() > 0 and grads["flow.blocks.0.subnet.2.weight"].abs().sum() > 0
    if stage == 2:
        assert grads["prior.delta"].abs().sum() > 0 and grads["prior.phi_intra"].abs().sum() > 0


def test_per_position_head_with_positional_code():
    # 3-channel feature maps of 6x6 positions; the condition is the positional code of each position.
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(4, 3, 5, 5))
    feats = maps.transpose(0, 2, 3, 1).reshape(-1, 3)
    code = positions_as_rows(positional_encoding_2d(8, 5, 5)).repeat(4, 1)
    head = fit_hgad_head(feats, None, code, n_classes=1, **FAST)
    scores = head.score(feats, code)
    assert scores.shape == (100,) and np.isfinite(scores).all()
    with pytest.raises(ValueError, match="cond"):
        head.score(feats, code[:10])


def test_digits_auroc_floor():
    """Unified setting on real data: digits 0-4 are normal (with labels), digit 7 is the anomaly."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    normal = np.flatnonzero(y < 5)
    rng.shuffle(normal)
    train, test_normal = normal[:600], normal[600:]
    test = np.concatenate([test_normal, np.flatnonzero(y == 7)[:60]])
    det = HGADDetector(n_blocks=4, hidden_dim=64, stage1_epochs=12, stage2_epochs=6, n_intra_centers=2,
                       batch_size=128, device="cpu", random_state=0).fit(X[train], y[train])
    auc = roc_auc_score((y[test] == 7).astype(int), det.decision_function(X[test]))
    assert auc > 0.92, auc  # measured 0.968


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
def test_cuda_fit_and_cpu_load(tmp_path):
    X, y = blobs(n_per=20)
    det = HGADDetector(**{**FAST, "device": "cuda"}).fit(X, y)
    assert det.head_.device.type == "cuda"
    loaded = HGADDetector.load(det.save(tmp_path / "m"), device="cpu")
    assert loaded.head_.device.type == "cpu"
    np.testing.assert_allclose(loaded.decision_function(X), det.decision_function(X), rtol=1e-4, atol=1e-5)
