"""Mask and label-volume input: damaged files, out-of-range labels and bad patch sizes get a
ValueError / TypeError naming the file or the argument."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from gnsm.core import MAX_FIELD_SIZE
from gnsm.data import PatchDataset, as_cases, open_label_volume


def _png(path, arr):
    from PIL import Image

    Image.fromarray(arr).save(path)
    return path


def _nifti(path, arr):
    import nibabel

    nibabel.save(nibabel.Nifti1Image(arr, np.eye(4)), str(path))
    return path


@pytest.fixture
def mask():
    m = np.zeros((16, 12), dtype=np.uint8)
    m[4:10, 3:8] = 1
    return m


def test_truncated_png_names_the_file(tmp_path, mask):
    good = _png(tmp_path / "good.png", mask)
    data = good.read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png: cannot read the label file"):
        open_label_volume(bad)
    with pytest.raises(ValueError, match="cut.png"):
        as_cases([str(good), str(bad)], spatial_dims=2)


def test_not_an_image_names_the_file(tmp_path):
    bad = tmp_path / "text.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="text.png: cannot read the label file"):
        open_label_volume(str(bad))


def test_truncated_nifti_names_the_file(tmp_path):
    vol = (np.arange(6 * 7 * 8).reshape(6, 7, 8) % 3).astype(np.int16)
    data = _nifti(tmp_path / "v.nii.gz", vol).read_bytes()
    header_cut = tmp_path / "header_cut.nii.gz"
    header_cut.write_bytes(data[:40])
    with pytest.raises(ValueError, match="header_cut.nii.gz: cannot read the label file"):
        open_label_volume(header_cut)
    raw = gzip.decompress(data)
    data_cut = tmp_path / "data_cut.nii.gz"
    data_cut.write_bytes(gzip.compress(raw[: len(raw) - 200])[:-8])  # header intact, data and trailer cut
    with pytest.raises(ValueError, match="data_cut.nii.gz"):
        as_cases([str(data_cut)], spatial_dims=3)
    with pytest.raises(ValueError, match="data_cut.nii.gz"):
        PatchDataset([str(data_cut)], (4, 4, 4), num_classes=3)[0]


def test_truncated_npy_names_the_file(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((8, 8), dtype=np.int64))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:200])
    with pytest.raises(ValueError, match="cut.npy: cannot read the label file"):
        open_label_volume(tmp_path / "cut.npy")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        open_label_volume(tmp_path / "nope.png")


@pytest.mark.parametrize("value, dtype", [(2 ** 63 + 5, np.uint64), (1e30, np.float64), (2 ** 40, np.int64)])
def test_huge_label_is_reported_as_huge_not_negative(value, dtype):
    arr = np.zeros((4, 4), dtype=dtype)
    arr[1, 2] = value
    with pytest.raises(ValueError) as err:
        as_cases(arr[None], spatial_dims=2)
    msg = str(err.value)
    assert "negative" not in msg and "at index (1, 2)" in msg and str(MAX_FIELD_SIZE - 1) in msg
    with pytest.raises(ValueError, match=r"is outside \[0, 3\)") as err:
        as_cases(arr[None], spatial_dims=2, num_classes=3)
    assert "negative" not in str(err.value)
    with pytest.raises(ValueError, match=r"expected labels in \[0, 3\), found ") as err:
        PatchDataset([arr], (4, 4), num_classes=3)[0]
    assert "found -" not in str(err.value)


def test_negative_label_still_named():
    arr = np.zeros((3, 3), dtype=np.int16)
    arr[2, 0] = -4
    with pytest.raises(ValueError, match=r"negative label -4 at index \(2, 0\)"):
        as_cases(arr[None], spatial_dims=2)


@pytest.mark.parametrize("patch, error, match", [
    ((0, 4), ValueError, "patch_size: every size must be >= 1"),
    ((4, -2), ValueError, "patch_size: every size must be >= 1"),
    ((4.5, 4), TypeError, "patch_size: expected integer sizes"),
    ((True, 4), TypeError, "patch_size: expected integer sizes"),
    ((), TypeError, "patch_size: expected a sequence"),
    (4, TypeError, "patch_size: expected a sequence"),
])
def test_patch_size_is_validated(mask, patch, error, match):
    with pytest.raises(error, match=match):
        PatchDataset([mask], patch, num_classes=2)


@pytest.mark.parametrize("k, error", [(0, ValueError), (True, TypeError), ([2, 3], TypeError),
                                      (MAX_FIELD_SIZE + 1, ValueError)])
def test_num_classes_is_validated(mask, k, error):
    with pytest.raises(error, match="num_classes"):
        PatchDataset([mask], (4, 4), num_classes=k)


def test_one_by_one_mask_patches():
    ds = PatchDataset([np.ones((1, 1), dtype=np.uint8)], (1, 1), num_classes=2, samples_per_epoch=2)
    assert torch.equal(ds[0], torch.ones(1, 1, dtype=torch.int64))
