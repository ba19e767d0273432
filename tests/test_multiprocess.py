"""Training over 2 JAX processes equals 1 process on the global batch.

The test starts 3 runs of tests/_multiprocess_worker.py, 1 CPU device each: the
reference (1 process, the whole global batch of every step) and the 2 processes
of one `jax.distributed` run (Gloo collectives on CPU), each reading its own part
of every global batch from the Grain pipeline. As for DataParallel on one process
(tests/test_jax.py), the losses must equal the reference's within 1e-4 relative
and the weight updates within 1e-2; the 2 processes must hold the same values, and
the `TrainingCheckpoint` that the chief writes must restore them in both.
Runs without TensorFlow.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_updates, uint8_images

pytestmark = [pytest.mark.core, pytest.mark.jax_only]

WORKER = Path(__file__).with_name("_multiprocess_worker.py")
TIMEOUT = 300  # seconds for all 3 runs; about 30 s on 2 idle cores
STEPS, GLOBAL_BATCH, SIZE = 3, 8, 8  # as in the worker


def test_two_processes_train_as_one_process_on_the_global_batch(tmp_path):
    if not _has_gloo():
        pytest.skip("this jaxlib has no Gloo CPU collectives")
    coordinator = f"localhost:{_free_port()}"
    from_environment = {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": coordinator,
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
        "KERAS_DISTRIBUTION_PROCESS_ID": "1",
    }
    reference, first, second = _run_all(
        tmp_path,
        {
            "reference": ([1], {}),
            "process-0": ([2, coordinator, 0], {}),  # initialize_processes(args)
            "process-1": ([2], from_environment),  # initialize_processes()
        },
    )

    chiefs = [bool(run["chief"]) for run in (reference, first, second)]
    assert chiefs == [True, True, False]
    assert_halves_of_the_global_batches(reference["batches"], first, second)
    assert_same_training(reference, first)
    assert_replicas_of_one_run(first, second)


def assert_halves_of_the_global_batches(global_batches, first, second):
    """Each process read its half of every global batch of the one-process order."""
    halves = [
        run["batches"].reshape(STEPS, GLOBAL_BATCH // 2, -1) for run in (first, second)
    ]
    together = np.concatenate(halves, axis=1).reshape(global_batches.shape)
    np.testing.assert_array_equal(together, global_batches)
    images = uint8_images(STEPS * GLOBAL_BATCH, SIZE)
    assert sorted(map(bytes, global_batches)) == sorted(map(bytes, images))


def assert_same_training(reference, run):
    """The same start, losses within 1e-4 and updates within 1e-2 relative."""
    initial = _weights(reference, "initial")
    for start, weight in zip(_weights(run, "initial"), initial, strict=True):
        np.testing.assert_array_equal(start, weight)
    assert len(reference["losses"]) == STEPS
    np.testing.assert_allclose(run["losses"], reference["losses"], rtol=1e-4)
    assert_same_updates(
        initial, _weights(reference, "final"), _weights(run, "final"), rtol=1e-2
    )


def assert_replicas_of_one_run(first, second):
    """The same losses and weights, which the chief saved and both restore."""
    np.testing.assert_array_equal(second["losses"], first["losses"])
    for run in (first, second):
        assert run["restored_epoch"] == 1
        for weight, other, restored in zip(
            _weights(first, "final"),
            _weights(run, "final"),
            _weights(run, "restored"),
            strict=True,
        ):
            np.testing.assert_array_equal(other, weight)
            np.testing.assert_array_equal(restored, weight)


def _run_all(folder, runs):
    """Start every worker, wait for all; on a failure or timeout, kill the rest.

    Args:
        folder: where the results and the logs go.
        runs: name -> (worker arguments after RESULT_NPZ, extra environment).

    Returns:
        The loaded results, in the order of `runs`.
    """
    environment = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        # 1 device per process (tests/conftest.py gives the test process 2).
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    }
    processes = {}
    try:
        for name, (arguments, extra) in runs.items():
            with open(folder / f"{name}.log", "w") as log:
                processes[name] = subprocess.Popen(
                    [sys.executable, str(WORKER), str(folder / f"{name}.npz")]
                    + [str(argument) for argument in arguments],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**environment, **extra},
                )
        _wait(processes, folder)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return [np.load(folder / f"{name}.npz") for name in runs]


def _wait(processes, folder):
    deadline = time.monotonic() + TIMEOUT
    running = dict(processes)
    while running:
        for name, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            if process.returncode:
                log = (folder / f"{name}.log").read_text()
                pytest.fail(f"{name} exited with {process.returncode}:\n{log[-3000:]}")
        if running and time.monotonic() > deadline:
            pytest.fail(f"{sorted(running)} did not finish in {TIMEOUT} s")
        time.sleep(0.2)


def _weights(result, prefix):
    count = sum(name.removeprefix(f"{prefix}_").isdigit() for name in result.files)
    return [result[f"{prefix}_{index}"] for index in range(count)]


def _free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _has_gloo():
    # Gloo ships with the jaxlib wheels of Linux and macOS; a jaxlib built
    # without it has no factory for it.
    from jax._src import lib

    extension = getattr(lib, "_jax", None) or getattr(lib, "xla_extension", None)
    return hasattr(extension, "make_gloo_tcp_collectives")
