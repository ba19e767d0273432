"""A resumed run: restarted after a real SIGKILL, and the guard of its settings.

Backend-neutral (`core`): these tests run on TensorFlow and on JAX. The run
that is killed and resumed is _resume_worker.py, in subprocesses; saving and
restoring one checkpoint is tested in test_checkpoints.py.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import complete_checkpoints

from keras_barlow import checkpoints

pytestmark = pytest.mark.core

WORKER = Path(__file__).with_name("_resume_worker.py")


# ----------------------------------------------------------------------------------
# A real SIGKILL in the middle of an epoch (see _resume_worker.py), on the backend
# of the tests. The resumed run must END BIT FOR BIT where the uninterrupted one
# ends (weights, seed generators, optimizer state, the losses of epochs 2 and 3):
# it restarts from the same float32 values and runs the same deterministic steps
# (TensorFlow with op determinism; XLA on the CPU is deterministic as it is).


def start_worker(model_dir, result, log, *extra):
    # The child keeps its own copy of the log's file descriptor.
    with open(log, "w") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(model_dir),
                str(result),
                *map(str, extra),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def wait_for(path, process, log, timeout=240):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"worker exited early:\n{Path(log).read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail("worker did not reach the pause point")
        time.sleep(0.2)


def finish(process, log, timeout=240):
    if process.wait(timeout=timeout) != 0:
        pytest.fail(f"worker failed:\n{Path(log).read_text()[-3000:]}")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_restart_ends_like_uninterrupted_run(tmp_path):
    marker = tmp_path / "paused"
    processes = []
    try:
        # The uninterrupted reference runs alongside the run that gets killed.
        reference = start_worker(
            tmp_path / "reference",
            tmp_path / "reference.npz",
            tmp_path / "reference.log",
        )
        victim = start_worker(
            tmp_path / "run",
            tmp_path / "unused.npz",
            tmp_path / "victim.log",
            "--pause-at",
            1,
            2,
            marker,
        )
        processes += [reference, victim]
        wait_for(marker, victim, tmp_path / "victim.log")  # epoch 2, after batch 3
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        assert complete_checkpoints(tmp_path / "run") == ["epoch-000001"]

        resumed = start_worker(
            tmp_path / "run", tmp_path / "resumed.npz", tmp_path / "resumed.log"
        )
        processes.append(resumed)
        finish(reference, tmp_path / "reference.log")
        finish(resumed, tmp_path / "resumed.log")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    expected = np.load(tmp_path / "reference.npz")
    got = np.load(tmp_path / "resumed.npz")
    assert int(expected["initial_epoch"]) == 0 and int(got["initial_epoch"]) == 1
    # The resumed run trained epochs 2 and 3 only.
    assert set(got.files) == set(expected.files) - {"loss_epoch_0"}
    for name in set(got.files) - {"initial_epoch"}:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert complete_checkpoints(tmp_path / "run") == ["epoch-000002", "epoch-000003"]


# ----------------------------------------------------------------------------------
# The settings guard of a resumed run.


def test_settings_are_stored_then_may_change_only_where_allowed(tmp_path):
    path = str(tmp_path / "run" / "settings.json")
    settings = {"seed": 0, "recipe": {"epochs": 10, "projector_dims": (16, 16)}}
    stored = checkpoints.check_settings(path, settings)  # a new run: stored
    assert json.loads(Path(path).read_text()) == stored
    assert stored["recipe.projector_dims"] == [16, 16]
    longer = {"seed": 0, "recipe": {"epochs": 20, "projector_dims": [16, 16]}}
    assert checkpoints.stored_settings(str(tmp_path / "none.json")) is None
    stored = checkpoints.check_settings(path, longer, may_change=("recipe.epochs",))
    assert stored["recipe.epochs"] == 20  # the run is longer from now on
    assert checkpoints.stored_settings(path) == stored
    with pytest.raises(ValueError, match=r"recipe\.epochs: 20 -> 10"):
        checkpoints.check_settings(path, settings)
    with pytest.raises(
        ValueError, match=r"other settings \(seed: 0 -> 1\).*another directory"
    ):
        checkpoints.check_settings(path, {**longer, "seed": 1})
    with pytest.raises(ValueError, match=r"extra: None -> 1"):
        checkpoints.check_settings(path, {**longer, "extra": 1})


def test_path_settings_compare_resolved(tmp_path, monkeypatch):
    data = tmp_path / "data.tar.gz"
    data.write_bytes(b"")
    (tmp_path / "link.tar.gz").symlink_to(data)
    (tmp_path / "sub").mkdir()
    path = str(tmp_path / "settings.json")
    checkpoints.check_settings(path, {"data": data})
    assert json.loads(Path(path).read_text())["data"] == str(data.resolve())
    monkeypatch.chdir(tmp_path / "sub")
    for same in (
        Path("../data.tar.gz"),
        Path("../link.tar.gz"),
        Path("./../data.tar.gz"),
    ):
        checkpoints.check_settings(path, {"data": same})
    with pytest.raises(ValueError, match=r"data: .*data\.tar\.gz' -> .*other\.tar"):
        checkpoints.check_settings(path, {"data": Path("../other.tar")})
    # A store that holds the path as typed (not resolved) still compares resolved.
    Path(path).write_text(json.dumps({"data": "../data.tar.gz"}))
    checkpoints.check_settings(path, {"data": data})
    # A text (not a path) is compared as text.
    with pytest.raises(ValueError, match="data"):
        checkpoints.check_settings(path, {"data": str(data)})
