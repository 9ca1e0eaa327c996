import pytest

from mtmusicldm.utils.fs import atomic_dir, atomic_file, clean_stale_tmp, write_json


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("2")
            raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_file_and_json(tmp_path):
    p = tmp_path / "x.json"
    write_json(p, {"b": 1, "a": [1, 2]})
    first = p.read_bytes()
    write_json(p, {"a": [1, 2], "b": 1})
    assert p.read_bytes() == first  # key-sorted: byte-stable
    with pytest.raises(ValueError):
        with atomic_file(p, "w") as f:
            f.write("partial")
            raise ValueError("boom")
    assert p.read_bytes() == first
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


def test_clean_stale_tmp(tmp_path):
    (tmp_path / ".out.tmp-1234").mkdir()
    (tmp_path / ".f.json.tmp-99").write_text("x")
    (tmp_path / "keep").write_text("y")
    assert len(clean_stale_tmp(tmp_path)) == 2
    assert [q.name for q in tmp_path.iterdir()] == ["keep"]


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_atomic_dir_removes_leftovers_of_killed_writers_of_the_same_output(tmp_path):
    import os

    dead, alive = _dead_pid(), os.getpid()
    for name in (f".out.tmp-{dead}-0badc0de", f".out.old-{dead}-0badc0de", f".out.tmp-{alive}-12345678",
                 f".other.tmp-{dead}-0badc0de"):
        (tmp_path / name).mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        assert tmp.name.startswith(f".out.tmp-{alive}-")
        (tmp / "a").write_text("1")
    # a live writer's folder and another output's leftovers are not ours to remove
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".other.tmp-{dead}-0badc0de",
                                                          f".out.tmp-{alive}-12345678", "out"]
    assert clean_stale_tmp(tmp_path) == [tmp_path / f".other.tmp-{dead}-0badc0de"]
