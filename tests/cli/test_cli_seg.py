"""The ``gnsm`` segmentation commands: fit-seg / score-seg / report-seg round trip, torchrun, and the
user errors that must exit with status 2 and a ``gnsm: error:`` line (no traceback, no training first)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from gnsm.cli import main

pytest.importorskip("PIL")


def _masks(folder, n=4):
    from PIL import Image
    folder.mkdir()
    for i in range(n):
        m = np.zeros((12, 12), np.uint8)
        m[6:] = 1
        m[7 + i % 3:9 + i % 3, 2:5] = 2
        Image.fromarray(m).save(folder / f"m{i}.png")
    return folder


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    masks = _masks(root / "masks")
    model = root / "model"
    assert main(["fit-seg", str(masks), "--model-dir", str(model), "--steps", "2", "--channels", "4", "8",
                 "--device", "cpu", "-q"]) == 0
    return masks, model


def _user_error(capsys, code) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("gnsm: error:") and "Traceback" not in err
    return err


def test_cli_fit_score_report_seg(tmp_path, capsys):
    from PIL import Image

    from gnsm.cli import main
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(4):
        m = np.zeros((12, 12), np.uint8)
        m[6:] = 1
        m[7 + i % 3:9 + i % 3, 2:5] = 2
        Image.fromarray(m).save(masks / f"m{i}.png")
    model = tmp_path / "model"
    assert main(["fit-seg", str(masks), "--model-dir", str(model), "--steps", "2", "--channels", "4", "8",
                 "--lr", "1e-3", "--device", "cpu", "-q"]) == 0
    import json
    assert json.loads((model / "meta.json").read_text())["params"]["lr"] == 1e-3
    model2 = tmp_path / "model2"
    assert main(["fit-seg", str(masks), "--model-dir", str(model2), "--steps", "2", "--channels", "4", "8",
                 "--positional-prior", "--device", "cpu", "-q"]) == 0
    assert json.loads((model2 / "meta.json").read_text())["params"]["positional_prior"] is True
    model3 = tmp_path / "model3"
    assert main(["fit-seg", str(masks), "--model-dir", str(model3), "--steps", "2", "--channels", "4", "8",
                 "--case-score", "map_mean", "--device", "cpu", "-q"]) == 0
    meta3 = json.loads((model3 / "meta.json").read_text())
    assert meta3["params"]["case_score"] == "map_mean" and meta3["state"]["head"] is None
    with pytest.raises(SystemExit) as exc:  # argparse's own choice check
        main(["fit-seg", str(masks), "--model-dir", str(tmp_path / "m4"), "--case-score", "max", "-q"])
    assert exc.value.code == 2 and "--case-score" in capsys.readouterr().err
    assert main(["evaluate-seg", "camvid-real", "--case-score", "map_mean", "--out", str(tmp_path / "e"), "-q"]) == 2
    assert "--case-score" in capsys.readouterr().err
    assert main(["evaluate-seg", "spine", "--positional-prior", "both", "--out", str(tmp_path / "e"), "-q"]) == 2
    assert "one --scoring and --positional-prior" in capsys.readouterr().err
    out = tmp_path / "scores.csv"
    assert main(["score-seg", str(masks / "m0.png"), str(masks / "m1.png"), "--model-dir", str(model),
                 "-o", str(out), "--maps-dir", str(tmp_path / "maps"), "-q"]) == 0
    import pandas as pd
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", "score", "is_poor", "flagged_voxels"] and len(table) == 2
    assert np.load(tmp_path / "maps" / "m0_anomaly.npy").shape == (12, 12)
    assert main(["score-seg", str(tmp_path / "nope.png"), "--model-dir", str(model), "-o", str(out), "-q"]) == 2
    assert "not found" in capsys.readouterr().err
    Image.fromarray(np.full((12, 12), 7, np.uint8)).save(tmp_path / "bad.png")
    assert main(["score-seg", str(tmp_path / "bad.png"), "--model-dir", str(model), "-o", str(out), "-q"]) == 2
    assert "outside [0, 3)" in capsys.readouterr().err

    cases = tmp_path / "cases.npz"
    rng = np.random.default_rng(1)
    np.savez(cases, gt=rng.integers(0, 3, (3, 6, 6)), pred=rng.integers(0, 3, (3, 6, 6)),
             anomaly_map=rng.normal(size=(3, 6, 6)), score=np.arange(3.0), dice=np.ones(3))
    assert main(["report-seg", str(cases), "--out", str(tmp_path / "fig"), "--top", "1", "-q"]) == 0
    assert (tmp_path / "fig" / "most_anomalous_1.png").is_file()
    np.savez(tmp_path / "broken.npz", gt=np.zeros((1, 2, 2)))
    assert main(["report-seg", str(tmp_path / "broken.npz"), "--out", str(tmp_path / "fig2"), "-q"]) == 2
    assert "missing arrays" in capsys.readouterr().err


def test_torchrun_fit_seg_trains_on_two_ranks(tmp_path):
    """``torchrun --nproc-per-node 2 -m gnsm fit-seg``: DDP on CPU (gloo); rank 0 alone writes the model."""
    import subprocess
    import sys

    from PIL import Image
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(4):
        m = np.zeros((12, 12), np.uint8)
        m[6:] = 1
        m[7:9, 2 + i:5 + i] = 2
        Image.fromarray(m).save(masks / f"m{i}.png")
    model = tmp_path / "model"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "gnsm", "fit-seg", str(masks), "--model-dir", str(model), "--steps", "3", "--channels", "4", "8",
           "--device", "cpu"]
    env = {**__import__("os").environ, "GNSM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    from gnsm.detectors import SegmentationQC
    det = SegmentationQC.load(model)
    assert det.train_info_["steps"] == 3
    assert done.stderr.count("gnsm fit-seg: saved") == 1  # rank 1 is quiet and does not write


@pytest.mark.parametrize("kind", ["png", "nii.gz", "npy"])
def test_corrupt_mask_files_are_named_user_errors(kind, seg_model, tmp_path, capsys):
    masks, model = seg_model
    bad = tmp_path / f"bad.{kind}"
    if kind == "png":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)   # a PNG signature, then garbage
    elif kind == "nii.gz":
        bad.write_bytes(gzip.compress(b"\x00" * 400)[:30])       # truncated gzip stream
    else:
        bad.write_bytes(b"\x93NUMPY garbage")
    code = main(["score-seg", str(bad), "--model-dir", str(model), "-o", str(tmp_path / "s.csv"), "-q"])
    assert "bad." in _user_error(capsys, code)
    code = main(["fit-seg", str(bad), "--model-dir", str(tmp_path / "m"), "--steps", "2", "--device", "cpu", "-q"])
    assert "bad." in _user_error(capsys, code)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("device", ["tpu", "cuda"])
def test_fit_seg_bad_device_is_a_user_error(device, seg_model, tmp_path, capsys):
    import torch
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    masks, _ = seg_model
    code = main(["fit-seg", str(masks), "--model-dir", str(tmp_path / "m"), "--steps", "2", "--device", device, "-q"])
    assert "--device" in _user_error(capsys, code)
    assert not (tmp_path / "m").exists()


def test_fit_seg_model_dir_is_checked_before_training(seg_model, tmp_path, capsys):
    masks, _ = seg_model
    afile = tmp_path / "afile"
    afile.write_text("x")
    for target in (afile, afile / "model"):
        code = main(["fit-seg", str(masks), "--model-dir", str(target), "--steps", "2", "--device", "cpu"])
        err = _user_error(capsys, code)
        assert "--model-dir" in err and "fit-seg: 4 masks" not in err  # no training started
    assert afile.read_text() == "x"


def test_score_seg_output_checks(seg_model, tmp_path, capsys):
    masks, model = seg_model
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for out, words in ((tmp_path, "is a folder"), (tmp_path / "s.xlsx", "unsupported file type"),
                       (afile / "x.csv", "is not a folder"), ("/dev/full", "'full'")):
        code = main(["score-seg", str(masks), "--model-dir", str(model), "-o", str(out), "-q"])
        assert words in _user_error(capsys, code)
    assert afile.read_text() == "keep me"
    if Path("/dev/full").exists():
        full = tmp_path / "scores.csv"
        full.symlink_to("/dev/full")  # a table name on a device that is always full
        code = main(["score-seg", str(masks), "--model-dir", str(model), "-o", str(full), "-q"])
        assert "No space left on device" in _user_error(capsys, code)
    tsv = tmp_path / "s.tsv"
    assert main(["score-seg", str(masks), "--model-dir", str(model), "-o", str(tsv), "-q"]) == 0
    assert tsv.read_text().splitlines()[0].split("\t") == ["file", "score", "is_poor", "flagged_voxels"]


def test_evaluate_seg_out_naming_a_file(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    code = main(["evaluate-seg", "camvid", "--out", str(afile), "-q"])
    assert "--out" in _user_error(capsys, code)  # before any data is loaded or a network trained
    assert afile.read_text() == "keep me"
