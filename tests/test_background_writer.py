"""Checkpoints and training states written in the background: in order, atomically, every
one on disk when the fit returns, and a failed write raised in the training thread."""

from __future__ import annotations

import os
import threading

import pytest
from conftest import tiny_raw

from mtlkit import Engine, load_config
from mtlkit.background_writer import BackgroundWriter
from mtlkit.errors import OutputError
from mtlkit.files import atomic_write_bytes


def test_writes_land_in_order_and_flush_waits_for_them(tmp_path):
    started, release = threading.Event(), threading.Event()
    order = []

    def slow_write(path, data):
        started.set()
        release.wait(10)
        atomic_write_bytes(path, data)
        order.append((path.name, data))

    writer = BackgroundWriter(write=slow_write)
    writer.write(tmp_path / "state", b"1")
    assert started.wait(10)
    writer.write(tmp_path / "state", b"2")  # returns while the first is still being written
    writer.write(tmp_path / "best", b"3")
    assert not (tmp_path / "state").exists()
    release.set()
    writer.close()
    assert order == [("state", b"1"), ("state", b"2"), ("best", b"3")]
    assert (tmp_path / "state").read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "state"]  # no temporaries


def test_a_failed_write_is_raised_by_the_next_write_or_flush(tmp_path, monkeypatch):
    (tmp_path / "state").write_bytes(b"old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    writer = BackgroundWriter()
    writer.write(tmp_path / "state", b"new")
    with pytest.raises(OutputError, match="No space left on device; its previous content"):
        writer.close()
    assert (tmp_path / "state").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state"]


def test_at_most_pending_writes_wait(tmp_path):
    release = threading.Event()
    writer = BackgroundWriter(pending=1, write=lambda path, data: release.wait(10))
    writer.write(tmp_path / "a", b"")  # taken by the thread
    writer.write(tmp_path / "b", b"")  # waits in the queue
    blocked = threading.Thread(target=writer.write, args=(tmp_path / "c", b""))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # the third one waits until there is room
    release.set()
    blocked.join(10)
    writer.close()
    with pytest.raises(ValueError, match="at least 1"):
        BackgroundWriter(pending=0)


def test_a_fit_leaves_its_checkpoints_and_state_on_disk_when_it_returns(tmp_path):
    raw = tiny_raw()
    raw["training"]["epochs"] = 2
    engine = Engine(load_config(raw))
    engine.checkpoint_dir = tmp_path
    engine.fit()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.safetensors", "last.safetensors", "state.safetensors"]
    assert engine._writer is None  # the thread is gone with the fit
    assert not [t for t in threading.enumerate() if t.name == "mtlkit-writer"]
