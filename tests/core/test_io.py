"""Atomic writes: the old content survives a failing writer; temporaries are cleaned."""
from __future__ import annotations

import os
import time

import pytest

from gnsm.core import (atomic_replace_dir, atomic_write, atomic_write_bytes, clean_stale_temps, interrupted_replace,
                       temp_pattern)


class Boom(RuntimeError):
    pass


def test_atomic_write_bytes_creates_and_replaces(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_atomic_write_failure_keeps_old_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def writer(f):
        f.write(b"partial")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(target, writer)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def _fill(content: dict[str, bytes]):
    def fill(folder):
        for name, data in content.items():
            (folder / name).write_bytes(data)
    return fill


def test_atomic_replace_dir_creates_and_replaces(tmp_path):
    target = tmp_path / "model"
    atomic_replace_dir(target, _fill({"w": b"1", "meta": b"a"}))
    atomic_replace_dir(target, _fill({"w": b"2"}))
    assert sorted(p.name for p in target.iterdir()) == ["w"]
    assert (target / "w").read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_replace_dir_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "model"
    atomic_replace_dir(target, _fill({"w": b"1"}))
    assert (target / "w").read_bytes() == b"1"


def test_atomic_replace_dir_failure_keeps_old(tmp_path):
    target = tmp_path / "model"
    atomic_replace_dir(target, _fill({"w": b"old", "meta": b"old"}))

    def fill(folder):
        (folder / "w").write_bytes(b"new")
        raise Boom  # e.g. the metadata is not serializable

    with pytest.raises(Boom):
        atomic_replace_dir(target, fill)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {"w": b"old", "meta": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_replace_dir_rejects_a_file_and_a_foreign_folder(tmp_path):
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    with pytest.raises(ValueError, match="afile: exists and is not a folder"):
        atomic_replace_dir(afile, _fill({}))
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_bytes(b"precious")
    called = []
    with pytest.raises(ValueError, match="refusing to replace"):
        atomic_replace_dir(home, lambda f: called.append(f), may_replace=lambda p: (p / "meta.json").exists())
    assert not called and (home / "thesis.tex").read_bytes() == b"precious"
    # an empty folder may always be filled
    empty = tmp_path / "empty"
    empty.mkdir()
    atomic_replace_dir(empty, _fill({"meta.json": b"{}"}), may_replace=lambda p: False)
    assert (empty / "meta.json").exists()


@pytest.mark.parametrize("below", ["m", "sub/m"])
def test_atomic_replace_dir_below_a_file_is_a_named_error(tmp_path, below):
    afile = tmp_path / "afile"
    afile.write_bytes(b"keep me")
    called = []
    with pytest.raises(ValueError, match=f"afile/{below}: cannot create the folder: .*afile is a file"):
        atomic_replace_dir(afile / below, lambda f: called.append(f))
    assert not called and afile.read_bytes() == b"keep me"


def test_atomic_replace_dir_removes_old_leftovers_of_a_killed_replace(tmp_path):
    target = tmp_path / "m"
    old_tmp, old_aside, fresh = tmp_path / ".m.k1.tmp", tmp_path / ".m.k2.old", tmp_path / ".m.k3.tmp"
    for leftover in (old_tmp, old_aside, fresh):
        leftover.mkdir()
        (leftover / "weights.pt").write_bytes(b"5 MB of a killed save")
    hour_ago = time.time() - 3700
    for leftover in (old_tmp, old_aside):
        os.utime(leftover, (hour_ago, hour_ago))
    atomic_replace_dir(target, _fill({"meta.json": b"{}"}))
    # a young one may be a save still running in another process
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.k3.tmp", "m"]


def test_interrupted_replace_finds_the_folder_set_aside(tmp_path):
    target = tmp_path / "m"
    assert interrupted_replace(target) is None
    aside = tmp_path / ".m.x1.old"  # what a kill between the two renames leaves: the old folder, no m
    aside.mkdir()
    (tmp_path / ".other.x2.old").mkdir()
    assert interrupted_replace(target) == aside
    target.mkdir()
    assert interrupted_replace(target) is None  # only for a missing folder


def test_clean_stale_temps(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"ckpt")
    stale = [tmp_path / ".last.pt.abc123.tmp", tmp_path / ".last.pt.zz.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    (tmp_path / ".last.pt.dir.tmp").mkdir()
    (tmp_path / ".last.pt.dir.tmp" / "x").write_bytes(b"")
    (tmp_path / ".best.pt.q.tmp").write_bytes(b"other target")
    (tmp_path / "last.pt.tmp").write_bytes(b"user file, no leading dot")
    removed = clean_stale_temps(tmp_path, temp_pattern("last.pt"))
    assert sorted(p.name for p in removed) == [".last.pt.abc123.tmp", ".last.pt.dir.tmp", ".last.pt.zz.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.pt.q.tmp", "last.pt", "last.pt.tmp"]
    assert clean_stale_temps(tmp_path / "missing", "*") == []


def test_clean_stale_temps_min_age(tmp_path):
    fresh = tmp_path / ".m.1.tmp"
    old = tmp_path / ".m.2.tmp"
    fresh.write_bytes(b"")
    old.write_bytes(b"")
    past = time.time() - 3600
    os.utime(old, (past, past))
    assert clean_stale_temps(tmp_path, temp_pattern("m"), min_age_s=60) == [old]
    assert fresh.exists()


def test_temp_pattern_escapes_glob_characters(tmp_path):
    (tmp_path / ".a[1].x.tmp").write_bytes(b"")
    (tmp_path / ".a1.x.tmp").write_bytes(b"")
    removed = clean_stale_temps(tmp_path, temp_pattern("a[1]"))
    assert [p.name for p in removed] == [".a[1].x.tmp"]


def test_atomic_write_temp_matches_temp_pattern(tmp_path):
    seen = []

    def writer(f):
        seen.extend(p.name for p in tmp_path.iterdir())
        f.write(b"x")

    atomic_write(tmp_path / "last.pt", writer)
    import fnmatch
    assert len(seen) == 1 and fnmatch.fnmatchcase(seen[0], temp_pattern("last.pt"))
