"""keras_barlow.distribute: TF_CONFIG, the strategy choice, the chief, the dtype policy.

The tests marked `core` run on JAX without TensorFlow too.
"""

import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest

from keras_barlow import distribute


@pytest.fixture
def tf():
    return pytest.importorskip("tensorflow")


@pytest.fixture
def without_tensorflow(monkeypatch):
    """`import tensorflow` fails in this test, as where it is not installed."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)


@pytest.mark.core
def test_tf_config_of_each_worker():
    workers = ["10.0.0.1:2222", "10.0.0.2:2222"]
    for index in (0, 1):
        assert json.loads(distribute.tf_config(workers, index)) == {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }


@pytest.mark.parametrize(
    "workers, task_index, message",
    [
        (["a:1", "b:2"], 2, r"`task_index` must be in \[0, 1\].*Received: 2"),
        (["a:1", "b:2"], None, r"`task_index` must be in \[0, 1\].*Received: None"),
        (["a:1", "b:2"], True, r"`task_index`.*Received: None"),
        (["a:1", "b:2"], -1, r"`task_index`.*Received: -1"),
        ([], 0, "non-empty list of 'host:port'"),
        (["a"], 0, r"'host:port'.*Received: workers=\['a'\]"),
    ],
)
@pytest.mark.core
def test_tf_config_refuses_bad_clusters(workers, task_index, message):
    with pytest.raises(ValueError, match=message):
        distribute.tf_config(workers, task_index)


def test_workers_set_tf_config_for_a_multi_worker_strategy(tf, monkeypatch):
    seen = {}

    class FakeMultiWorker:  # the real one would start a server on the port
        def __init__(self):
            seen["TF_CONFIG"] = os.environ["TF_CONFIG"]

    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", FakeMultiWorker)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.choose_strategy(workers=["a:1", "b:2"], task_index=1)
    assert isinstance(strategy, FakeMultiWorker)
    assert json.loads(seen["TF_CONFIG"])["task"]["index"] == 1


def test_one_device_and_replicas(tf, monkeypatch):
    # No GPU here: all visible GPUs means the default strategy.
    assert distribute.choose_strategy() is tf.distribute.get_strategy()
    assert distribute.choose_strategy(replicas=1) is tf.distribute.get_strategy()
    # A fake that returns its devices (a second real MirroredStrategy in one
    # process breaks the collectives of the first: see tests/conftest.py).
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", lambda devices=None: devices)
    # tests/conftest.py made two logical CPUs.
    devices = distribute.choose_strategy(replicas=2)
    assert [name.split("/")[-1] for name in devices] == ["device:CPU:0", "device:CPU:1"]
    with pytest.raises(ValueError, match=r"more than the 2 logical CPU.*replicas=3"):
        distribute.choose_strategy(replicas=3)
    with pytest.raises(ValueError, match="replicas=0"):
        distribute.choose_strategy(replicas=0)
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: ["g0", "g1"]
    )
    assert distribute.choose_strategy() is None  # MirroredStrategy() over all GPUs


def test_chief_and_waiting_on_one_machine(tf, mirrored_strategy):
    assert distribute.is_chief(tf.distribute.get_strategy())
    assert distribute.is_chief(mirrored_strategy)
    assert distribute.is_chief()  # the current strategy
    distribute.wait_for_all_workers(mirrored_strategy)  # returns at once


@pytest.mark.core
@pytest.mark.jax_only
def test_the_chief_on_jax_is_process_zero(tmp_path, monkeypatch):
    import jax

    assert distribute.is_chief() and distribute.is_chief(None)
    with distribute.output_dir(None, tmp_path) as folder:
        assert folder == str(tmp_path)
    distribute.wait_for_all_workers(None)  # one process: returns at once
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert not distribute.is_chief()
    with distribute.output_dir(None, tmp_path / "shared") as folder:
        assert os.path.isdir(folder) and folder != str(tmp_path / "shared")
    assert not os.path.exists(folder) and not (tmp_path / "shared").exists()


@pytest.mark.core
@pytest.mark.jax_only
def test_data_parallel_sets_keras_data_parallel_over_the_devices():
    # tests/conftest.py made two XLA CPU devices.
    try:
        distribution = distribute.data_parallel()
        assert isinstance(distribution, keras.distribution.DataParallel)
        assert keras.distribution.distribution() is distribution
        assert distribution.device_mesh.devices.size == 2
        variable = keras.Variable(np.ones((4, 3), "float32"))  # replicated
        assert len(variable.value.sharding.device_set) == 2
        batch = distribution.get_data_layout((8, 3))  # split on the batch axis
        assert batch.axes[0] == distribution.batch_dim_name
        one = distribute.data_parallel(replicas=1)
        assert one.device_mesh.devices.size == 1
        assert keras.distribution.distribution() is one
        with pytest.raises(ValueError, match=r"more than the 2 device.*replicas=3"):
            distribute.data_parallel(replicas=3)
        with pytest.raises(ValueError, match="replicas=0"):
            distribute.data_parallel(replicas=0)
    finally:
        keras.distribution.set_distribution(None)


@pytest.mark.core
@pytest.mark.jax_only
def test_data_parallel_over_several_processes_takes_each_process_part(monkeypatch):
    import jax

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    try:
        distribution = distribute.data_parallel()
        # Keras would refuse (or split again) the part a process feeds.
        part = iter([np.zeros((4, 8, 8, 3), "uint8")])
        assert distribution.distribute_dataset(part) is part
        with pytest.raises(ValueError, match=r"this run has 2 processes.*replicas=1"):
            distribute.data_parallel(replicas=1)
    finally:
        keras.distribution.set_distribution(None)


@pytest.mark.core
@pytest.mark.jax_only
def test_without_distribution_makes_variables_of_one_device():
    try:
        distribution = distribute.data_parallel()
        with distribute.without_distribution():
            assert keras.distribution.distribution() is None
            variable = keras.Variable(np.ones((4, 3), "float32"))
            assert len(variable.value.sharding.device_set) == 1
        assert keras.distribution.distribution() is distribution
        keras.distribution.set_distribution(None)
        with distribute.without_distribution():
            assert keras.distribution.distribution() is None
        assert keras.distribution.distribution() is None
    finally:
        keras.distribution.set_distribution(None)


@pytest.mark.core
@pytest.mark.jax_only
def test_initialize_processes_sets_the_cpu_collectives_and_starts_keras(monkeypatch):
    import jax

    calls = []
    monkeypatch.setattr(
        keras.distribution, "initialize", lambda *arguments: calls.append(arguments)
    )
    before = jax.config.jax_cpu_collectives_implementation
    try:
        jax.config.update("jax_cpu_collectives_implementation", "mpi")
        distribute.initialize_processes("localhost:1234", 2, 1)
        assert jax.config.jax_cpu_collectives_implementation == "gloo"
        jax.config.update("jax_cpu_collectives_implementation", "mpi")
        distribute.initialize_processes(cpu_collectives=None)  # from the environment
        assert jax.config.jax_cpu_collectives_implementation == "mpi"
    finally:
        jax.config.update("jax_cpu_collectives_implementation", before)
    assert calls == [("localhost:1234", 2, 1), (None, None, None)]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"coordinator_address": "localhost"}, "'host:port' of process 0"),
        ({"num_processes": 0}, "num_processes=0"),
        ({"num_processes": 2, "process_id": 2}, r"\[0, 1\].*process_id=2"),
        ({"process_id": -1}, "process_id=-1"),
        ({"cpu_collectives": "nccl"}, "cpu_collectives='nccl'"),
    ],
)
@pytest.mark.core
@pytest.mark.jax_only
def test_initialize_processes_refuses_bad_arguments(arguments, message, monkeypatch):
    monkeypatch.setattr(keras.distribution, "initialize", None)  # never reached
    with pytest.raises(ValueError, match=message):
        distribute.initialize_processes(**arguments)


def test_initialize_processes_on_tensorflow_points_to_choose_strategy():
    with pytest.raises(RuntimeError, match=r"'tensorflow'.*choose_strategy\(workers="):
        distribute.initialize_processes("localhost:1234", 2, 0)


@pytest.mark.core
@pytest.mark.jax_only
def test_choose_strategy_on_jax_points_to_data_parallel():
    # With TensorFlow installed; without it, see the test below.
    pytest.importorskip("tensorflow")
    with pytest.raises(RuntimeError, match=r"KERAS_BACKEND='jax'.*data_parallel\(\)"):
        distribute.choose_strategy()


def test_data_parallel_on_tensorflow_points_to_choose_strategy():
    with pytest.raises(RuntimeError, match=r"'tensorflow'.*use `choose_strategy\(\)`"):
        distribute.data_parallel()


@pytest.mark.core
def test_without_tensorflow_its_functions_name_the_extra(without_tensorflow):
    extras = r"keras-barlow\[cpu\]`.*`pip install keras-barlow\[gpu\]`"
    with pytest.raises(ImportError, match=extras + r".*data_parallel\(\)"):
        distribute.choose_strategy()
    with pytest.raises(ImportError, match=r"distribute.shard_by_data` needs Tens"):
        distribute.shard_by_data(None)
    if keras.backend.backend() == "jax":  # these need no TensorFlow there
        assert distribute.is_chief()
        assert distribute.auto_dtype_policy() == "float32"
        distribute.wait_for_all_workers(None)
    else:
        with pytest.raises(ImportError, match=extras):
            distribute.is_chief()
        with pytest.raises(ImportError, match=extras):
            distribute.auto_dtype_policy()


@pytest.mark.core
@pytest.mark.jax_only
def test_auto_dtype_policy_on_jax(monkeypatch):
    import jax

    assert distribute.auto_dtype_policy() == "float32"  # CPU devices only
    for capability, policy in (
        ("9.0", "mixed_bfloat16"),
        ("8.6", "mixed_bfloat16"),
        ("7.5", "mixed_float16"),
        ("6.1", "float32"),
    ):
        gpu = types.SimpleNamespace(platform="gpu", compute_capability=capability)
        monkeypatch.setattr(jax, "devices", lambda gpu=gpu: [gpu])
        assert distribute.auto_dtype_policy() == policy


def test_auto_dtype_policy(tf, monkeypatch):
    assert distribute.auto_dtype_policy() == "float32"  # no GPU
    assert distribute.auto_dtype_policy("float16") == "mixed_float16"
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu"])
    for capability, policy in (((8, 0), "mixed_bfloat16"), ((7, 5), "mixed_float16")):
        monkeypatch.setattr(
            tf.config.experimental,
            "get_device_details",
            lambda gpu, c=capability: {"compute_capability": c},
        )
        assert distribute.auto_dtype_policy() == policy
    with pytest.raises(ValueError, match="Received: choice='fp8'"):
        distribute.auto_dtype_policy("fp8")


@pytest.mark.core
def test_importing_it_does_not_import_tensorflow():
    # The module alone, without the package's __init__ (which imports the rest).
    code = (
        "import sys, types; package = types.ModuleType('keras_barlow'); "
        f"package.__path__ = [{os.path.dirname(distribute.__file__)!r}]; "
        "sys.modules['keras_barlow'] = package; import keras_barlow.distribute; "
        "print('tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.stdout.strip() == "False"


def test_output_dir_is_the_directory_on_the_chief_and_scratch_elsewhere(tf, tmp_path):
    with distribute.output_dir(tf.distribute.get_strategy(), tmp_path) as folder:
        assert folder == str(tmp_path)
    assert tmp_path.exists()

    class Worker:  # a non-chief worker of a multi-worker strategy
        class extended:
            should_checkpoint = False

    with distribute.output_dir(Worker(), tmp_path / "shared") as folder:
        assert folder != str(tmp_path / "shared") and os.path.isdir(folder)
        open(os.path.join(folder, "log"), "w").close()
    assert not os.path.exists(folder) and not (tmp_path / "shared").exists()
    assert not distribute.is_chief(Worker())


def test_shard_by_data_sets_the_policy(tf):
    dataset = distribute.shard_by_data(tf.data.Dataset.range(4))
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA
    assert list(dataset.as_numpy_iterator()) == [0, 1, 2, 3]
