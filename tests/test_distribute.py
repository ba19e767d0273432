"""keras_barlow.distribute: TF_CONFIG, the strategy choice, the dtype policy."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from keras_barlow import distribute


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
def test_tf_config_refuses_bad_clusters(workers, task_index, message):
    with pytest.raises(ValueError, match=message):
        distribute.tf_config(workers, task_index)


def test_workers_set_tf_config_for_a_multi_worker_strategy(monkeypatch):
    seen = {}

    class FakeMultiWorker:  # the real one would start a server on the port
        def __init__(self):
            seen["TF_CONFIG"] = os.environ["TF_CONFIG"]

    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", FakeMultiWorker)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.choose_strategy(workers=["a:1", "b:2"], task_index=1)
    assert isinstance(strategy, FakeMultiWorker)
    assert json.loads(seen["TF_CONFIG"])["task"]["index"] == 1


def test_one_device_and_replicas(monkeypatch):
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


def test_chief_and_waiting_on_one_machine(mirrored_strategy):
    assert distribute.is_chief(tf.distribute.get_strategy())
    assert distribute.is_chief(mirrored_strategy)
    distribute.wait_for_all_workers(mirrored_strategy)  # returns at once


def test_auto_dtype_policy(monkeypatch):
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


def test_output_dir_is_the_directory_on_the_chief_and_scratch_elsewhere(tmp_path):
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


def test_shard_by_data_sets_the_policy():
    dataset = distribute.shard_by_data(tf.data.Dataset.range(4))
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA
    assert list(dataset.as_numpy_iterator()) == [0, 1, 2, 3]
