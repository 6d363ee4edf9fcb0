"""The ``gnsm`` command line: demo, fit/score/explain round trip, evaluate, and the error exits."""
from __future__ import annotations

import subprocess
import sys

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


def test_info(capsys):
    assert main(["info"]) == 0
    assert "gnsm" in capsys.readouterr().out


def test_demo_small(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GNSM_DEMO_STEPS", "40")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet", "--top", "3"]) == 0
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
