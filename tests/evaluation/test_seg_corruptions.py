"""Seeded segmentation corruptions: determinism, shapes, error masks, Dice / IoU, severity, errors."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest

from gnsm.evaluation.segmentation import (CORRUPTIONS, DEFAULT_SEVERITIES, CorruptedCase, corrupt,
                                          dice_histogram, dice_iou, error_mask, make_cases)

CAMVID_IGNORE = 11


# ------------------------------------------------------------------ data
def _camvid_dir():
    try:
        from gnsm.datasets import find_data_dir
        path = find_data_dir() / "camvid_labels" / "valannot"
    except FileNotFoundError:
        return None
    return path if path.is_dir() else None


@lru_cache(maxsize=None)
def camvid(n: int = 4) -> tuple[np.ndarray, ...]:
    """``n`` real CamVid val label maps (360 x 480 uint8), spread over the set."""
    pil = pytest.importorskip("PIL.Image")
    root = _camvid_dir()
    if root is None:
        pytest.skip("shared/data/camvid_labels not available")
    files = sorted(root.glob("*.png"))
    assert len(files) == 101
    picks = np.linspace(0, len(files) - 1, n).round().astype(int)
    return tuple(np.array(pil.open(files[i])) for i in picks)


def street_scene(seed: int = 0, shape=(72, 96)) -> np.ndarray:
    """A synthetic 2-D map: sky / building / road bands, a car, poles and a void patch (11)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    m = np.zeros(shape, dtype=np.uint8)                    # sky
    m[h // 4:, :] = 1                                      # building
    m[h // 2:, :] = 3                                      # road
    m[h // 2:h // 2 + 4, :] = 4                            # pavement
    y0, x0 = h // 2 + 8 + rng.integers(0, 4), 10 + rng.integers(0, 20)
    m[y0:y0 + 10, x0:x0 + 18] = 8                          # car
    for x in (60, 75):
        m[h // 4 - 6:h // 2 + 4, x:x + 2] = 2              # poles
    m[h - 6:, w - 12:] = CAMVID_IGNORE                     # void
    return m


def spine_like(shape=(48, 56, 10)) -> np.ndarray:
    """A synthetic 3-D label volume: background 0, a column of 'vertebrae' 41.., a canal 100."""
    vol = np.zeros(shape, dtype=np.uint8)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    for i, lab in enumerate((41, 42, 43, 44)):
        cz = 6 + 11 * i
        vol[((zz - cz) ** 2 / 20 + (yy - 28) ** 2 / 60 + (xx - 5) ** 2 / 10) <= 1] = lab
    vol[((yy - 40) ** 2 + (xx - 5) ** 2) <= 6] = 100
    return vol


# ------------------------------------------------------------------ determinism and order
def test_same_seed_same_cases_and_different_seed_differs():
    masks = [street_scene(0), street_scene(1)]
    a = make_cases(masks, seed=7, severities=(0.3, 0.9), ignore_index=CAMVID_IGNORE)
    b = make_cases(masks, seed=7, severities=(0.3, 0.9), ignore_index=CAMVID_IGNORE)
    c = make_cases(masks, seed=8, severities=(0.3, 0.9), ignore_index=CAMVID_IGNORE)
    assert len(a) == len(b) == len(c) == 2 * (1 + len(CORRUPTIONS) * 2)
    for x, y in zip(a, b):
        assert (x.index, x.kind, x.severity) == (y.index, y.kind, y.severity)
        np.testing.assert_array_equal(x.pred, y.pred)
        assert x.dice == y.dice and x.iou == y.iou
    assert any(not np.array_equal(x.pred, z.pred) for x, z in zip(a, c) if x.kind != "clean")


def test_corrupt_is_deterministic_under_a_seed():
    m = street_scene(3)
    for kind in CORRUPTIONS:
        p1 = corrupt(m, kind, 0.6, np.random.default_rng(123), CAMVID_IGNORE)
        p2 = corrupt(m, kind, 0.6, 123, CAMVID_IGNORE)   # an int seed gives the same stream
        np.testing.assert_array_equal(p1, p2)


def test_cases_do_not_depend_on_order_or_on_the_other_requested_cases():
    masks = [street_scene(0), street_scene(1), street_scene(2)]
    full = make_cases(masks, seed=3, severities=(0.2, 0.5, 1.0), ignore_index=CAMVID_IGNORE)
    part = make_cases(masks, seed=3, kinds=tuple(reversed(CORRUPTIONS))[:4], severities=(1.0, 0.5),
                      ignore_index=CAMVID_IGNORE, include_clean=False, indices=[2, 0])
    by_key = {(c.index, c.kind, c.severity): c for c in full}
    assert [c.index for c in part][:1] == [2]
    assert len(part) == 2 * 4 * 2
    for c in part:
        ref = by_key[(c.index, c.kind, c.severity)]
        np.testing.assert_array_equal(c.pred, ref.pred)
        assert c.dice == ref.dice and c.seed_entropy == ref.seed_entropy


# ------------------------------------------------------------------ shapes, dtypes, ignore
@pytest.mark.parametrize("kind", CORRUPTIONS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.uint16])
def test_2d_shape_and_dtype_preserved(kind, dtype):
    m = street_scene(1).astype(dtype)
    p = corrupt(m, kind, 0.7, np.random.default_rng(0), CAMVID_IGNORE)
    assert p.shape == m.shape and p.dtype == m.dtype
    assert p is not m
    assert not np.array_equal(p, m)


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_3d_shape_dtype_and_anisotropic_spacing(kind):
    vol = spine_like()
    for spacing in (None, (3.3, 0.6, 0.6)):
        p = corrupt(vol, kind, 0.8, np.random.default_rng(1), spacing=spacing)
        assert p.shape == vol.shape and p.dtype == vol.dtype
        assert not np.array_equal(p, vol), (kind, spacing)
        # inserted / relabelled values come from the label set of the volume
        assert set(np.unique(p)) <= set(np.unique(vol))


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_negative_ignore_index_and_bool_masks(kind):
    m = street_scene(2).astype(np.int64)
    m[m == CAMVID_IGNORE] = -1
    p = corrupt(m, kind, 0.9, np.random.default_rng(5), ignore_index=-1)
    assert p.dtype == np.int64
    np.testing.assert_array_equal(p[m == -1], -1)
    assert not (p[m != -1] == -1).any()
    b = np.zeros((40, 50), dtype=bool)
    b[10:30, 12:20] = True
    b[5:9, 30:45] = True
    pb = corrupt(b, kind, 0.9, np.random.default_rng(5))
    assert pb.dtype == np.bool_ and pb.shape == b.shape


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_ignore_pixels_kept_and_error_mask_is_pred_ne_gt_outside_ignore(kind):
    m = street_scene(4)
    void = m == CAMVID_IGNORE
    assert void.any()
    p = corrupt(m, kind, 1.0, np.random.default_rng(2), CAMVID_IGNORE)
    np.testing.assert_array_equal(p[void], CAMVID_IGNORE)      # void stays void
    assert not (p[~void] == CAMVID_IGNORE).any()                # nothing else becomes void
    err = error_mask(m, p, CAMVID_IGNORE)
    assert err.dtype == np.bool_ and err.shape == m.shape
    np.testing.assert_array_equal(err, (p != m) & ~void)
    assert err.any()
    # pixels of the ignore label are never errors, even if the prediction differs there
    q = p.copy()
    q[void] = 0
    np.testing.assert_array_equal(error_mask(m, q, CAMVID_IGNORE), err)
    assert error_mask(m, q).sum() == err.sum() + void.sum()


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_large_void_regions_stay_void(kind):
    m = street_scene(6, shape=(80, 120))
    m[:, 50:70] = CAMVID_IGNORE                                # a wide void band through the scene
    void = m == CAMVID_IGNORE
    for seed in range(3):
        p = corrupt(m, kind, 1.0, np.random.default_rng(seed), CAMVID_IGNORE)
        np.testing.assert_array_equal(p[void], CAMVID_IGNORE)
        assert not (p[~void] == CAMVID_IGNORE).any()


def test_case_fields_agree_with_the_functions():
    m = street_scene(5)
    cases = make_cases([m], seed=11, severities=(0.5,), ignore_index=CAMVID_IGNORE, labels=11)
    assert isinstance(cases[0], CorruptedCase)
    assert cases[0].kind == "clean" and cases[0].severity == 0.0
    assert cases[0].dice == 1.0 and cases[0].iou == 1.0 and cases[0].n_errors == 0
    for c in cases:
        d, j, per = dice_iou(m, c.pred, 11, CAMVID_IGNORE)
        assert (c.dice, c.iou) == (d, j) and c.per_class == per
        np.testing.assert_array_equal(c.error, error_mask(m, c.pred, CAMVID_IGNORE))
        assert c.n_errors == int(c.error.sum())
        assert c.gt is m
        if c.kind != "clean":
            assert c.dice < 1.0 and c.n_errors > 0, c.kind
    hist = dice_histogram(cases)
    assert sum(hist["all"]) == len(cases) and hist["clean"][-1] == 1


# ------------------------------------------------------------------ severity
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_severity_zero_returns_the_ground_truth(kind):
    for m in (street_scene(0), spine_like()):
        p = corrupt(m, kind, 0.0, np.random.default_rng(0), CAMVID_IGNORE)
        np.testing.assert_array_equal(p, m)
        assert p is not m and p.dtype == m.dtype


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_every_kind_changes_real_maps_at_low_severity(kind):
    for i, m in enumerate(camvid()):
        p = corrupt(m, kind, 0.05, np.random.default_rng(i), CAMVID_IGNORE)
        err = error_mask(m, p, CAMVID_IGNORE)
        assert err.any(), (kind, i)
        assert dice_iou(m, p, 11, CAMVID_IGNORE)[0] < 1.0


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_higher_severity_lowers_dice_on_real_maps(kind):
    maps = camvid()
    mean = {}
    for s in (0.1, 0.5, 1.0):
        vals = []
        for i, m in enumerate(maps):
            for rep in range(2):
                rng = np.random.default_rng(np.random.SeedSequence([i, rep]))
                vals.append(dice_iou(m, corrupt(m, kind, s, rng, CAMVID_IGNORE), 11, CAMVID_IGNORE)[0])
        mean[s] = float(np.mean(vals))
    assert mean[0.1] > mean[0.5] > mean[1.0], mean
    assert mean[0.1] > 0.9, mean                     # mild damage stays "good"
    assert mean[1.0] < 0.85, mean                    # full severity is clearly damaging


def test_default_severities_span_good_to_poor_on_real_maps():
    cases = make_cases(list(camvid()), seed=0, ignore_index=CAMVID_IGNORE, labels=11)
    dice = np.array([c.dice for c in cases])
    assert len(cases) == 4 * (1 + len(CORRUPTIONS) * len(DEFAULT_SEVERITIES))
    assert (dice >= 0.9).mean() > 0.2
    assert (dice < 0.7).mean() > 0.1
    assert ((dice >= 0.7) & (dice < 0.9)).mean() > 0.2


# ------------------------------------------------------------------ Dice / IoU
def test_dice_iou_hand_computed():
    gt = np.array([[0, 0, 1, 1],
                   [0, 0, 1, 1],
                   [2, 2, 9, 9]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 1, 3],
                     [2, 0, 5, 0]])
    # ignore 9: the last two pixels of the bottom row do not count at all
    # class 0: |G|=4, |P|=4 (excluding ignore), |G&P|=3 -> dice 6/8, iou 3/5
    # class 1: |G|=4, |P|=4, inter=3 -> dice 6/8, iou 3/5
    # class 2: |G|=2, |P|=1, inter=1 -> dice 2/3, iou 1/2
    # class 3: |G|=0, |P|=1 -> dice 0, iou 0 (present in pred only: counted)
    mean_d, mean_j, per = dice_iou(gt, pred, ignore_index=9)
    assert set(per) == {0, 1, 2, 3}
    assert per[0] == pytest.approx((0.75, 0.6))
    assert per[1] == pytest.approx((0.75, 0.6))
    assert per[2] == pytest.approx((2 / 3, 0.5))
    assert per[3] == (0.0, 0.0)
    assert mean_d == pytest.approx((0.75 + 0.75 + 2 / 3 + 0) / 4)
    assert mean_j == pytest.approx((0.6 + 0.6 + 0.5 + 0) / 4)
    # with a label set: classes absent from both (4, 6, 7, 8) are skipped; 5 only sits on ignore
    d2, j2, per2 = dice_iou(gt, pred, labels=range(9), ignore_index=9)
    assert (d2, j2) == (mean_d, mean_j) and per2 == per
    assert dice_iou(gt, pred, labels=9, ignore_index=9)[0] == mean_d
    # without ignore: 9 and 5 become ordinary classes
    d3, _, per3 = dice_iou(gt, pred)
    assert per3[9] == (0.0, 0.0) and per3[5] == (0.0, 0.0)
    assert per3[0][0] == pytest.approx(2 * 3 / (4 + 5))   # pred 0 also at the former-ignore pixel


def test_dice_iou_edge_cases():
    gt = np.array([[1, 1], [2, 2]], dtype=np.uint8)
    assert dice_iou(gt, gt) == (1.0, 1.0, {1: (1.0, 1.0), 2: (1.0, 1.0)})
    # predicting the ignore label on a valid pixel is an error, not a free pass
    pred = np.array([[1, 9], [2, 2]], dtype=np.uint8)
    d, j, per = dice_iou(gt, pred, ignore_index=9)
    assert per == {1: (pytest.approx(2 / 3), 0.5), 2: (1.0, 1.0)}
    assert 9 not in per
    all_void = np.full((2, 2), 9)
    d, j, per = dice_iou(all_void, all_void, ignore_index=9)
    assert math.isnan(d) and math.isnan(j) and per == {}


# ------------------------------------------------------------------ bad input
def test_bad_input_raises_clear_value_errors():
    m = street_scene(0)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown corruption 'blur'"):
        corrupt(m, "blur", 0.5, rng)
    for bad in (-0.1, 1.5, float("nan"), "0.5", True, None):
        with pytest.raises(ValueError, match=r"severity: expected a number in \[0, 1\]"):
            corrupt(m, "erosion", bad, rng)
    with pytest.raises(ValueError, match="expected integer labels, got dtype float"):
        corrupt(m.astype(np.float32), "erosion", 0.5, rng)
    with pytest.raises(ValueError, match="numpy array"):
        corrupt(m.tolist(), "erosion", 0.5, rng)
    with pytest.raises(ValueError, match="non-empty"):
        corrupt(np.zeros((0, 4), np.uint8), "erosion", 0.5, rng)
    with pytest.raises(ValueError, match="spacing"):
        corrupt(m, "erosion", 0.5, rng, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="ignore_index"):
        corrupt(m, "erosion", 0.5, rng, ignore_index=1.5)
    with pytest.raises(ValueError, match="shape"):
        dice_iou(m, m[:-1])
    with pytest.raises(ValueError, match="expected integer labels"):
        dice_iou(m, m.astype(np.float64))
    with pytest.raises(ValueError, match=r"pred: label value\(s\) \[12\] not in labels"):
        dice_iou(m, np.where(m == 0, 12, m).astype(np.uint8), labels=11, ignore_index=11)
    with pytest.raises(ValueError, match="shape"):
        error_mask(m, m[:, :-1])
    with pytest.raises(ValueError, match="unknown corruption"):
        make_cases([m], seed=0, kinds=("erosion", "swirl"))
    with pytest.raises(ValueError, match="severity"):
        make_cases([m], seed=0, severities=(0.5, 2.0))
    with pytest.raises(ValueError, match="expected integer labels"):
        make_cases([m.astype(float)], seed=0)
