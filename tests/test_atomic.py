"""The one atomic writer: all or nothing, unique temporaries, no leftovers."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from pipeline.data.atomic import write_bytes, write_file


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "meta.json"
    write_bytes(path, b"old")

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_file(path, fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_writers_that_name_by_suffix_and_the_mode(tmp_path):
    path = tmp_path / "init.npz"  # np.savez appends .npz to a name without it
    write_file(path, lambda tmp: np.savez(tmp, a=np.arange(3)), mode=0o644)
    assert np.load(path)["a"].tolist() == [0, 1, 2]
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["init.npz"]


def _write_many(path, tag):
    for _ in range(200):
        write_bytes(path, tag * 1000)


def test_two_processes_writing_one_path_never_share_a_temporary(tmp_path):
    path = tmp_path / "latest.json"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(path, t)) for t in (b"a", b"b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert path.read_bytes() in (b"a" * 1000, b"b" * 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json"]
