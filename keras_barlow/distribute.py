"""Which devices train: the `tf.distribute` strategy and the mixed-precision policy.

A training script calls `choose_strategy` once, before any other TensorFlow op, and
builds and compiles its model under `strategy.scope()`:

```python
strategy = keras_barlow.distribute.choose_strategy()  # all visible GPUs
keras.mixed_precision.set_dtype_policy(keras_barlow.distribute.auto_dtype_policy())
with strategy.scope():
    model = keras_barlow.presets.get("cifar10-resnet18").model()
    model.compile(optimizer=...)
```

On several machines without a cluster manager, every machine runs the same script
with the same list of workers and its own index:
`choose_strategy(workers=["10.0.0.1:2222", "10.0.0.2:2222"], task_index=0)`.

TensorFlow is imported inside the functions: the package imports without it.
"""

import contextlib
import json
import os
import shutil
import tempfile

from keras_barlow import _checks as checks

POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def tf_config(workers, task_index):
    """The `TF_CONFIG` JSON text of worker `task_index` in a cluster of `workers`.

    Args:
        workers: list of `"host:port"` strings, every worker of the cluster in the
            same order on every machine; worker 0 is the chief.
        task_index: int, this worker's position in `workers`.

    Returns:
        str, e.g. `'{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type":
        "worker", "index": 1}}'`.

    Example:

    >>> json.loads(tf_config(["a:1", "b:2"], 1))["task"]
    {'type': 'worker', 'index': 1}
    """
    workers = list(workers)
    if not workers or not all(isinstance(w, str) and ":" in w for w in workers):
        raise ValueError(
            "`workers` must be a non-empty list of 'host:port' strings. "
            f"Received: workers={workers!r}"
        )
    if isinstance(task_index, bool) or not isinstance(task_index, int):
        task_index = None
    if task_index is None or not 0 <= task_index < len(workers):
        raise ValueError(
            f"`task_index` must be in [0, {len(workers) - 1}] for {len(workers)} "
            f"workers. Received: {task_index}"
        )
    return json.dumps(
        {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": task_index},
        }
    )


def choose_strategy(workers=None, task_index=None, replicas=None):
    """One `tf.distribute` strategy for the process; call it before any other TF op.

    - `workers` given: `MultiWorkerMirroredStrategy`, after setting `TF_CONFIG`
      from `tf_config(workers, task_index)`.
    - `replicas=None`: all visible GPUs, `MirroredStrategy` when there are several,
      else the default strategy (one GPU or the CPU).
    - `replicas=1`: the default strategy.
    - `replicas=N`: `MirroredStrategy` over the first N logical GPUs, or the first
      N logical CPUs when there is no GPU (create logical devices beforehand with
      `tf.config.set_logical_device_configuration` when there are fewer).

    Returns:
        A `tf.distribute.Strategy`; `strategy.num_replicas_in_sync` replicas share
        each global batch.
    """
    import tensorflow as tf

    if workers:
        os.environ["TF_CONFIG"] = tf_config(workers, task_index)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if replicas is None:
        if len(tf.config.list_physical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    replicas = checks.positive_int("replicas", replicas)
    if replicas == 1:
        return tf.distribute.get_strategy()
    kind = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    devices = [device.name for device in tf.config.list_logical_devices(kind)]
    if len(devices) < replicas:
        raise ValueError(
            f"`replicas` is more than the {len(devices)} logical {kind} device(s). "
            f"Received: replicas={replicas}. Create logical devices with "
            "tf.config.set_logical_device_configuration before TensorFlow starts, "
            "or ask for fewer replicas."
        )
    return tf.distribute.MirroredStrategy(devices[:replicas])


def is_chief(strategy):
    """Whether this worker writes checkpoints, logs and exports: True on one machine."""
    return bool(getattr(strategy.extended, "should_checkpoint", True))


@contextlib.contextmanager
def output_dir(strategy, directory):
    """`directory` on the chief; on another worker, a scratch folder removed at exit.

    Every worker of a multi-worker run writes its checkpoints, logs and exports (the
    collective operations need them all), but only the chief's may go to the shared
    `directory`.

    Yields:
        str, the folder this worker writes to.
    """
    if is_chief(strategy):
        yield os.fspath(directory)
        return
    scratch = tempfile.mkdtemp(prefix="keras_barlow-worker-")
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def shard_by_data(dataset):
    """`dataset` with every worker reading all of it and keeping its share of a batch.

    The auto-sharding by files of `MultiWorkerMirroredStrategy` would give each
    worker other files; by data, a pipeline whose order is keyed by the epoch (see
    `keras_barlow.checkpoints`) stays the same on every worker.

    Args:
        dataset: a `tf.data.Dataset`.

    Returns:
        The dataset with `AutoShardPolicy.DATA`.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def wait_for_all_workers(strategy):
    """Block until every worker of `strategy` gets here (a no-op on one machine).

    A multi-worker chief reports a worker that exits before it as a crash: call this
    last on every worker.
    """
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


def auto_dtype_policy(choice="auto"):
    """The Keras dtype policy name of a mixed-precision choice.

    Args:
        choice: `"auto"`, `"none"`, `"bfloat16"` or `"float16"`. `"auto"` is
            bfloat16 on GPUs of compute capability 8 and more, float16 on older
            GPUs, none (float32) without a GPU.

    Returns:
        `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`, for
        `keras.mixed_precision.set_dtype_policy`.
    """
    checks.choice("choice", choice, ("auto", *POLICIES))
    if choice == "auto":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        major = 0
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            major = details.get("compute_capability", (0, 0))[0]
        choice = "bfloat16" if major >= 8 else "float16" if major >= 7 else "none"
    return POLICIES[choice]
