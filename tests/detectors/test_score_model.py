"""The score-network detectors' shared base: every parameter is checked at the start of fit, before any work."""
from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
import torch

from gnsm.detectors import GNSMDetector, HGADDetector, ScoreModelDetector, SegmentationQC
from gnsm.detectors.heads import HEAD_OPTIONS

TABLE = pd.DataFrame({"a": list("xyzxyzxyzx"), "b": list("ppqqppqqpp")})
MASKS = np.stack([np.eye(6, dtype=np.int64)] * 4)


def _no_work(monkeypatch):
    """Make any training or encoding fail loudly: a parameter error must come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the parameters were checked")

    monkeypatch.setattr(ScoreModelDetector, "_train_network", forbidden)
    monkeypatch.setattr("gnsm.detectors.tabular.TabularEncoder.fit", forbidden)
    monkeypatch.setattr("gnsm.detectors.segmentation.detector.as_cases", forbidden)


COMMON_BAD = [
    ("max_components", 0), ("max_components", 2.0), ("n_neighbors", 0), ("n_score_temperatures", 0),
    ("n_noise_copies", 0), ("n_steps", 2.5), ("n_steps", 0), ("n_steps", True), ("batch_size", 0),
    ("n_temperatures", 0), ("lr", 0.0), ("lr", float("nan")), ("weight_decay", -1.0), ("ema_decay", 1.0),
    ("eps", 0.0), ("eps", 1.0), ("tau_min", 0.0), ("tau_max", float("inf")), ("tau_max", "20"),
    ("random_state", -1), ("random_state", 1.5), ("device", "tpu"), ("scoring", "nope"), ("head", "nope"),
    ("head_options", {"blocks": 2}), ("head_options", [1]),
]
TABULAR_BAD = COMMON_BAD + [("width", 0), ("width", 64.0), ("depth", -1), ("dropout", 1.0), ("n_steps", "many")]
SEG_BAD = COMMON_BAD + [("channels", ()), ("channels", (8, 0)), ("num_res_blocks", 0), ("cond_channels", -1),
                        ("num_classes", 1), ("score_batch_size", 0), ("pixel_contamination", 0.0),
                        ("n_steps", "auto"), ("patch_size", (4.5, 4)), ("patch_size", 4), ("patch_size", (0, 4)),
                        ("patch_size", ()), ("window", 2.5), ("window", (True, 4)), ("window", (8, -1)),
                        ("flip_axes", (0.5,)), ("flip_axes", 0), ("flip_axes", (-1,)), ("coord_channels", "yes"),
                        ("positional_prior", "no")]


@pytest.mark.parametrize("name, value", TABULAR_BAD)
def test_gnsm_detector_parameters(name, value, monkeypatch):
    _no_work(monkeypatch)
    det = GNSMDetector(**{name: value})
    with pytest.raises(ValueError, match=f"^{name}"):
        det.fit(TABLE)
    assert not hasattr(det, "model_") and not hasattr(det, "encoder_")


@pytest.mark.parametrize("name, value", SEG_BAD)
def test_segmentation_qc_parameters(name, value, monkeypatch):
    _no_work(monkeypatch)
    det = SegmentationQC(**{name: value})
    with pytest.raises(ValueError, match=f"^{name}"):
        det.fit(MASKS)
    assert not hasattr(det, "model_")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("cls, X", [(GNSMDetector, TABLE), (SegmentationQC, MASKS)])
def test_cuda_without_gpu_is_a_named_error(cls, X, monkeypatch):
    _no_work(monkeypatch)
    with pytest.raises(ValueError, match="device: 'cuda' asks for CUDA, but no CUDA device is available"):
        cls(device="cuda").fit(X)


def test_valid_edge_values_pass_the_checks(monkeypatch):
    """Values at the edges of the accepted ranges reach the work (here: the forbidden encoder)."""
    _no_work(monkeypatch)
    det = GNSMDetector(depth=0, n_steps=np.int64(1), n_score_temperatures=None, ema_decay=0.0, weight_decay=0.0,
                       tau_max=2.0, tau_min=2.0, random_state=None, device="cpu", head_options={"n_blocks": 2})
    with pytest.raises(AssertionError, match="work started"):
        det.fit(TABLE)


def test_valid_segmentation_sizes_pass_the_checks(monkeypatch):
    _no_work(monkeypatch)
    det = SegmentationQC(patch_size=np.array([4, 4]), window=[np.int64(6), 6], flip_axes=(), coord_channels=np.bool_(1),
                         positional_prior=True, device="cpu")
    with pytest.raises(AssertionError, match="work started"):
        det.fit(MASKS)


def test_every_hgad_head_option_is_a_detector_parameter():
    params = set(inspect.signature(HGADDetector.__init__).parameters) - {"self"}
    assert set(HEAD_OPTIONS) == params - {"contamination"}


def test_refit_scoring_splits_every_parameter():
    """Every constructor parameter is either a scoring parameter (refit may change it) or a network one."""
    det = SegmentationQC()
    network = det._network_params()
    assert network == {"num_classes", "channels", "num_res_blocks", "cond_channels", "coord_channels",
                       "patch_size", "flip_axes", "n_steps", "batch_size", "lr", "weight_decay", "ema_decay",
                       "n_temperatures", "tau_max", "tau_min", "eps", "eps_max"}
    assert not network & SegmentationQC.SCORING_PARAMS
