"""The ``gnsm`` table commands: demo, fit/score/explain round trip, evaluate, and the user errors that must
exit with status 2 and a ``gnsm: error:`` line (no traceback, checked before any training)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gnsm.cli import main
from gnsm.datasets import load_dataset


@pytest.fixture(scope="module")
def cars_csv(tmp_path_factory):
    ds = load_dataset("cars")
    frame = ds.X.assign(label=np.where(ds.y == 1, "vgood", "unacc"))
    path = tmp_path_factory.mktemp("cli") / "cars.csv"
    frame.sample(400, random_state=0).to_csv(path, index=False)
    return path


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_help_exits_zero():
    out = subprocess.run([sys.executable, "-m", "gnsm", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout and "evaluate" in out.stdout
    for cmd in ("demo", "fit", "score", "evaluate", "explain"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0


def test_parser_does_not_load_torch():
    # The detectors' option tuples are read lazily: building the parser (gnsm --help) stays light.
    code = "import sys; from gnsm.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_info(capsys):
    assert main(["info"]) == 0
    assert "gnsm" in capsys.readouterr().out


def test_demo_small(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet", "--top", "3", "--steps", "40"]) == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "AP" in out and "->" in out
    assert (tmp_path / "demo" / "score_norm_profiles.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "model" / "meta.json").is_file()


def test_fit_score_explain_round_trip(cars_csv, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["fit", str(cars_csv), "--label-col", "label", "--model-dir", str(model), "--steps", "20",
                 "--quiet"]) == 0
    out = tmp_path / "scores.csv"
    assert main(["score", str(cars_csv), "--model-dir", str(model), "--label-col", "label", "-o", str(out),
                 "--quiet"]) == 0
    scores = pd.read_csv(out)
    assert len(scores) == 400 and {"score", "is_anomaly", "label"} <= set(scores.columns)
    pq = tmp_path / "scores.parquet"
    pytest.importorskip("pyarrow")
    assert main(["score", str(cars_csv), "--model-dir", str(model), "-o", str(pq), "--quiet"]) == 0
    assert np.allclose(pd.read_parquet(pq)["score"], scores["score"])
    capsys.readouterr()
    assert main(["explain", str(cars_csv), "--model-dir", str(model), "--label-col", "label", "--top", "4"]) == 0
    text = capsys.readouterr().out
    assert "field_1" in text and "contribution_1" in text


def test_evaluate_file_dataset(cars_csv, tmp_path, capsys):
    code = main(["evaluate", "--data", str(cars_csv), "--label-col", "label", "--anomaly-value", "vgood",
                 "--detectors", "frequency", "--seeds", "42", "--out", str(tmp_path / "ev"), "--quiet"])
    assert code == 0
    assert (tmp_path / "ev" / "results.json").is_file() and (tmp_path / "ev" / "results.md").is_file()


@pytest.mark.parametrize("case", ["missing_file", "unknown_column", "label_absent", "all_numeric", "empty",
                                  "header_only", "no_model"])
def test_errors_exit_nonzero(case, cars_csv, tmp_path, capsys):
    model = str(tmp_path / "m")
    if case == "missing_file":
        argv = ["fit", str(tmp_path / "nope.csv"), "--model-dir", model]
    elif case == "unknown_column":
        argv = ["fit", str(cars_csv), "--model-dir", model, "--categorical", "no_such_col"]
    elif case == "label_absent":
        argv = ["fit", str(cars_csv), "--model-dir", model, "--label-col", "no_such_label"]
    elif case == "all_numeric":
        p = tmp_path / "num.csv"
        pd.DataFrame({"a": np.arange(30.0), "b": np.arange(30.0) ** 2}).to_csv(p, index=False)
        argv = ["fit", str(p), "--model-dir", model, "--steps", "5"]
    elif case == "empty":
        p = tmp_path / "empty.csv"
        p.write_text("")
        argv = ["fit", str(p), "--model-dir", model]
    elif case == "header_only":
        p = tmp_path / "header.csv"
        p.write_text("a,b,c\n")
        argv = ["fit", str(p), "--model-dir", model]
    else:
        argv = ["score", str(cars_csv), "--model-dir", str(tmp_path / "nomodel"), "-o", str(tmp_path / "o.csv")]
    assert main(argv + ["--quiet"]) == 2
    err = _err(capsys)
    assert err.startswith("gnsm: error:") and len(err) > 20


def test_evaluate_bad_input_exit_code(tmp_path, capsys):
    code = main(["evaluate", "--data", "cars", str(tmp_path / "missing.csv"), "--label-col", "y",
                 "--anomaly-value", "1", "--out", str(tmp_path), "-q"])
    assert code == 2
    assert "file not found" in capsys.readouterr().err
    assert main(["evaluate", "--data", "cars", "--detectors", "nope", "-q", "--out", str(tmp_path)]) == 2


# ---------------------------------------------------------------------------- user errors, checked early
@pytest.fixture(scope="module")
def cars_model(cars_csv, tmp_path_factory):
    model = tmp_path_factory.mktemp("model") / "m"
    assert main(["fit", str(cars_csv), "--label-col", "label", "--model-dir", str(model), "--steps", "5", "-q"]) == 0
    return model


@pytest.fixture(scope="module")
def small_csv(cars_csv):
    """60 rows of the cars table: enough to score or fit for a few steps, cheap on 2 CPU cores."""
    path = cars_csv.with_name("small.csv")
    pd.read_csv(cars_csv).head(60).to_csv(path, index=False)
    return path


def _user_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("gnsm: error:") and "Traceback" not in err
    return err


@pytest.mark.parametrize("device", ["tpu", "cuda"])
def test_fit_bad_device_fails_before_training(device, cars_csv, tmp_path, capsys):
    import torch
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    code = main(["fit", str(cars_csv), "--label-col", "label", "--model-dir", str(tmp_path / "m"),
                 "--steps", "5", "--device", device])
    err = _user_error(capsys, code)
    assert "--device" in err and "gnsm fit: 400 rows" not in err  # the check came before training
    assert not (tmp_path / "m").exists()


def test_fit_model_dir_naming_a_file_fails_before_training(cars_csv, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for target in (afile, afile / "model"):
        code = main(["fit", str(cars_csv), "--label-col", "label", "--model-dir", str(target), "--steps", "5"])
        err = _user_error(capsys, code)
        assert "--model-dir" in err and "gnsm fit: 400 rows" not in err
    assert afile.read_text() == "keep me"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    code = main(["fit", str(cars_csv), "--label-col", "label", "--model-dir", str(busy), "--steps", "5"])
    err = _user_error(capsys, code)
    assert "notes.txt" in err and "gnsm fit: 400 rows" not in err
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


def test_score_output_checks(cars_csv, cars_model, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    cases = {tmp_path: "is a folder", afile / "x.csv": "is not a folder", tmp_path / "x.xlsx": "unsupported file type"}
    for out, words in cases.items():
        code = main(["score", str(cars_csv), "--model-dir", str(cars_model), "-o", str(out), "-q"])
        assert words in _user_error(capsys, code)
    assert not (tmp_path / "x.xlsx").exists() and afile.read_text() == "keep me"
    code = main(["explain", str(cars_csv), "--model-dir", str(cars_model), "-o", str(tmp_path / "e.xlsx"), "-q"])
    assert "unsupported file type" in _user_error(capsys, code)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_score_to_a_full_disk_is_a_user_error(small_csv, cars_model, tmp_path, capsys):
    code = main(["score", str(small_csv), "--model-dir", str(cars_model), "-o", "/dev/full", "-q"])
    assert "'full'" in _user_error(capsys, code)  # no table suffix: refused before scoring
    full = tmp_path / "scores.csv"
    full.symlink_to("/dev/full")  # a table name on a device that is always full
    code = main(["score", str(small_csv), "--model-dir", str(cars_model), "-o", str(full), "-q"])
    err = _user_error(capsys, code)
    assert "scores.csv" in err and "No space left on device" in err


def test_score_writes_by_suffix(small_csv, cars_model, tmp_path):
    tsv = tmp_path / "scores.tsv"
    assert main(["score", str(small_csv), "--model-dir", str(cars_model), "-o", str(tsv), "-q"]) == 0
    table = pd.read_csv(tsv, sep="\t")
    assert len(table) == 60 and {"score", "is_anomaly", "label"} <= set(table.columns)


def test_evaluate_out_naming_a_file(cars_csv, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    code = main(["evaluate", "--data", str(cars_csv), "--label-col", "label", "--anomaly-value", "vgood",
                 "--detectors", "frequency", "--seeds", "42", "--out", str(afile), "-q"])
    assert "--out" in _user_error(capsys, code)
    assert afile.read_text() == "keep me"


def test_fit_rejects_duplicate_headers(tmp_path, capsys):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a\nx,y,z\nx,y,w\n")
    code = main(["fit", str(path), "--model-dir", str(tmp_path / "m"), "--steps", "5", "-q"])
    err = _user_error(capsys, code)
    assert "duplicate column" in err and "['a']" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("top", ["-1", "0", "two"])
def test_explain_top_must_be_positive(top, cars_csv, cars_model, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["explain", str(cars_csv), "--model-dir", str(cars_model), "--top", top])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--top" in err and "Traceback" not in err


def test_head_loss_is_a_choice(small_csv, tmp_path):
    model = tmp_path / "m"
    assert main(["fit", str(small_csv), "--label-col", "label", "--model-dir", str(model), "--head", "loss",
                 "--steps", "5", "-q"]) == 0
    import json
    assert json.loads((model / "meta.json").read_text())["params"]["head"] == "loss"

