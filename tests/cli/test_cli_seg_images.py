"""``fit-seg`` / ``score-seg`` with images: pairing by file name, a missing image, a size mismatch, a
model trained with (or without) images, and soft probabilities as the predicted masks."""
from __future__ import annotations

import numpy as np
import pytest

from gnsm.cli import main

pytest.importorskip("PIL")


def _pairs(root, n=4, shape=(12, 12)):
    from PIL import Image
    masks, images = root / "masks", root / "images"
    masks.mkdir()
    images.mkdir()
    for i in range(n):
        m = np.zeros(shape, np.uint8)
        m[6:] = 1
        m[2:4, 2 + i:5 + i] = 2
        Image.fromarray(m).save(masks / f"case{i}.png")
        Image.fromarray((np.stack([m, m, m], -1) * 100).astype(np.uint8)).save(images / f"case{i}.jpg")
    return masks, images


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("segimg")
    masks, images = _pairs(root)
    model = root / "model"
    assert main(["fit-seg", str(masks), "--images", str(images), "--model-dir", str(model), "--steps", "2",
                 "--channels", "4", "8", "--eps-max", "0.3", "--device", "cpu", "-q"]) == 0
    return root, masks, images, model


def _error(capsys, code) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("gnsm: error:") and "Traceback" not in err
    return err


def test_images_condition_the_model_and_pair_by_name(image_model, tmp_path):
    from gnsm.detectors import SegmentationQC
    root, masks, images, model = image_model
    det = SegmentationQC.load(model)
    assert det.cond_channels == 3 and det.eps_max == 0.3
    out = tmp_path / "s.csv"
    assert main(["score-seg", str(masks), "--images", str(images), "--model-dir", str(model), "-o", str(out),
                 "-q"]) == 0
    import pandas as pd
    first = pd.read_csv(out)
    # images given as files in another order pair by name: the same scores
    files = sorted((str(p) for p in images.iterdir()), reverse=True)
    assert main(["score-seg", str(masks), "--images", *files, "--model-dir", str(model), "-o", str(out), "-q"]) == 0
    assert np.allclose(pd.read_csv(out)["score"], first["score"])
    # a different image changes the score: the model reads it
    from PIL import Image
    other = tmp_path / "other"
    other.mkdir()
    for p in images.iterdir():
        Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(other / p.name)
    assert main(["score-seg", str(masks), "--images", str(other), "--model-dir", str(model), "-o", str(out), "-q"]) == 0
    assert not np.allclose(pd.read_csv(out)["score"], first["score"])


def test_soft_probabilities_are_scored_with_images(image_model, tmp_path):
    _, masks, images, model = image_model
    soft = tmp_path / "soft"
    soft.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        p = rng.dirichlet(np.ones(3), size=(12, 12)).transpose(2, 0, 1).astype(np.float32)
        np.save(soft / f"case{i}.npy", p)
    out = tmp_path / "soft.csv"
    assert main(["score-seg", str(soft), "--images", str(images), "--model-dir", str(model), "-o", str(out),
                 "-q"]) == 0
    import pandas as pd
    assert np.isfinite(pd.read_csv(out)["score"]).all()


def test_missing_image_size_mismatch_and_wrong_use_are_named(image_model, tmp_path, capsys):
    from PIL import Image
    root, masks, images, model = image_model
    out = tmp_path / "s.csv"
    partial = tmp_path / "partial"
    partial.mkdir()
    for p in sorted(images.iterdir())[:2]:
        (partial / p.name).write_bytes(p.read_bytes())
    err = _error(capsys, main(["score-seg", str(masks), "--images", str(partial), "--model-dir", str(model),
                               "-o", str(out)]))
    assert "no image named 'case2'" in err and "2 of 4 masks have no image" in err
    small = tmp_path / "small"
    small.mkdir()
    for p in images.iterdir():
        Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(small / p.name)
    err = _error(capsys, main(["score-seg", str(masks), "--images", str(small), "--model-dir", str(model),
                               "-o", str(out)]))
    assert "is (10, 12), its mask" in err
    err = _error(capsys, main(["score-seg", str(masks), "--model-dir", str(model), "-o", str(out)]))
    assert "trained with images (3 channels); pass --images" in err
    err = _error(capsys, main(["fit-seg", str(masks), "--images", str(tmp_path / "nowhere"), "--model-dir",
                               str(tmp_path / "m2"), "--steps", "1"]))
    assert "nowhere" in err and not (tmp_path / "m2").exists()
    twin = tmp_path / "twin"
    twin.mkdir()
    for p in images.iterdir():
        (twin / p.name).write_bytes(p.read_bytes())
        (twin / (p.stem + ".png")).write_bytes(p.read_bytes())
    err = _error(capsys, main(["score-seg", str(masks), "--images", str(twin), "--model-dir", str(model),
                               "-o", str(out)]))
    assert "two images named" in err


def test_model_without_images_refuses_them(tmp_path, capsys):
    masks, images = _pairs(tmp_path)
    model = tmp_path / "plain"
    assert main(["fit-seg", str(masks), "--model-dir", str(model), "--steps", "1", "--channels", "4",
                 "--device", "cpu", "-q"]) == 0
    err = _error(capsys, main(["score-seg", str(masks), "--images", str(images), "--model-dir", str(model),
                               "-o", str(tmp_path / "s.csv")]))
    assert "trained without images" in err
