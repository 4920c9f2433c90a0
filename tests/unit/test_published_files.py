"""Scored files and drift reports are published whole: a writer that fails or is killed with
SIGKILL half-way leaves nothing under the final name (only a hidden temporary file)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from mlsteward.monitoring.published import draft, write_whole


def test_a_whole_file_appears_under_its_name_and_nothing_else_stays(tmp_path: Path) -> None:
    target = tmp_path / "scored" / "scored-1.parquet"
    assert write_whole(target, lambda tmp: tmp.write_bytes(b"PAR1" + b"x" * 100 + b"PAR1"))
    assert target.read_bytes().endswith(b"PAR1") and target.stat().st_size == 108
    assert [p.name for p in target.parent.iterdir()] == ["scored-1.parquet"]

    # rewritten in place while a draft (as the drift report is annotated), published once
    page = tmp_path / "reports" / "drift-1.html"
    with draft(page) as tmp:
        tmp.write_text("<html><body>")
        assert not page.exists()
        tmp.write_text(tmp.read_text() + "</body></html>")
    assert page.read_text() == "<html><body></body></html>"


def test_a_failed_writer_leaves_no_file(tmp_path: Path) -> None:
    page = tmp_path / "drift-1.html"
    with pytest.raises(RuntimeError, match="evidently failed"), draft(page) as tmp:
        tmp.write_text("<html>")
        raise RuntimeError("evidently failed")
    assert list(tmp_path.iterdir()) == []


def test_a_writer_killed_half_way_leaves_only_a_hidden_file(tmp_path: Path) -> None:
    target = tmp_path / "scored-1.parquet"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: half the file, then it waits to be killed
        os.close(read)

        def half(tmp: Path) -> None:
            tmp.write_bytes(b"PAR1" + b"x" * 1000)
            os.write(write, b"1")
            signal.pause()

        write_whole(target, half)
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(read)
    assert not target.exists()
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".") and left[0].name.endswith(".tmp")
