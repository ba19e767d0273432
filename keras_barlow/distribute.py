"""Which devices train, which process is the chief, and the mixed-precision policy.

On Keras' TensorFlow backend, a training script calls `choose_strategy` once,
before any other TensorFlow op, and builds and compiles its model under
`strategy.scope()`:

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

On JAX, `data_parallel()` sets `keras.distribution.DataParallel` over the devices
instead, before the model is built; no scope is needed. Several JAX processes (one
per machine, or one per GPU) each call `initialize_processes` first, then
`data_parallel()`, and each feeds its own part of every global batch, as the
`keras_barlow.data` loaders do by default:

```python
keras_barlow.distribute.initialize_processes("10.0.0.1:1234", 2, process_id=0)
keras_barlow.distribute.data_parallel()  # every device of every process
# This process's 128 images of every global batch of 256:
train = keras_barlow.data.from_image_folder("images/", batch_size=256, epochs=100)
```

Every process then runs the same steps; what one process writes alone (the
chief's files) goes through `without_distribution`, or every process writes
through `output_dir`.

TensorFlow is imported inside the functions that need it: the module imports
without it, and on JAX `is_chief`, `output_dir`, `wait_for_all_workers`,
`auto_dtype_policy`, `initialize_processes`, `data_parallel` and
`without_distribution` run without it.
"""

import contextlib
import json
import os
import shutil
import tempfile

import keras

from keras_barlow import _backend
from keras_barlow import _checks as checks

POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
CPU_COLLECTIVES = ("gloo", "mpi", None)


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

    Raises:
        ImportError: TensorFlow is not installed.
        RuntimeError: the Keras backend is not TensorFlow (on JAX, use
            `data_parallel`).
    """
    on_jax = "On JAX, call `keras_barlow.distribute.data_parallel()` instead."
    tf = _tensorflow("choose_strategy", on_jax)
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "`choose_strategy` returns a tf.distribute strategy, which distributes "
            "Keras' TensorFlow backend only; this process runs KERAS_BACKEND="
            f"{keras.backend.backend()!r}. {on_jax}"
        )
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


def initialize_processes(
    coordinator_address=None,
    num_processes=None,
    process_id=None,
    *,
    cpu_collectives="gloo",
):
    """Join this process to a JAX run over several processes; call it first.

    Every process of the run calls it with the same coordinator and count and its
    own id, before anything else runs on JAX (before `data_parallel`, a model or
    a `keras_barlow.data` loader). It sets how processes exchange values on CPU
    devices, then calls `keras.distribution.initialize`, which starts
    `jax.distributed`. Afterwards `jax.devices()` lists every process's devices
    and `jax.process_index()` is this process's id (`is_chief` on process 0).

    Arguments left `None` come from the environment: Keras'
    `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES` and
    `KERAS_DISTRIBUTION_PROCESS_ID`, then JAX's `JAX_COORDINATOR_ADDRESS` and
    the clusters JAX detects by itself (Slurm, Open MPI, Kubernetes, Cloud TPU).

    Args:
        coordinator_address: `"host:port"` of process 0, reachable from every
            process (`"localhost:1234"` on one machine); process 0 listens there.
        num_processes: int, the number of processes of the run.
        process_id: int in `[0, num_processes)`, this process's id.
        cpu_collectives: `"gloo"` (default: over TCP, ships with jaxlib),
            `"mpi"` (needs an MPI library) or `None` (JAX's own setting):
            JAX's `jax_cpu_collectives_implementation`, which CPU devices need
            to sum gradients across processes. GPUs and TPUs use their own
            (NCCL, ICI) whatever this says.

    Raises:
        RuntimeError: the Keras backend is not JAX; from JAX, when it has
            already run something in this process or was initialized before.
        ValueError: an argument is malformed.

    Example, on one machine with 2 processes (`python train.py 0` and
    `python train.py 1`):

    ```python
    process_id = int(sys.argv[1])
    keras_barlow.distribute.initialize_processes("localhost:1234", 2, process_id)
    keras_barlow.distribute.data_parallel()
    ```
    """
    _require_jax(
        "initialize_processes",
        "On TensorFlow, use `choose_strategy(workers=..., task_index=...)`.",
    )
    _check_process_arguments(coordinator_address, num_processes, process_id)
    checks.choice("cpu_collectives", cpu_collectives, CPU_COLLECTIVES)
    import jax

    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    keras.distribution.initialize(coordinator_address, num_processes, process_id)


def _check_process_arguments(coordinator_address, num_processes, process_id):
    if coordinator_address is not None and not (
        isinstance(coordinator_address, str) and ":" in coordinator_address
    ):
        raise ValueError(
            "`coordinator_address` must be the 'host:port' of process 0, e.g. "
            f"'10.0.0.1:1234'. Received: coordinator_address={coordinator_address!r}"
        )
    if num_processes is not None:
        checks.positive_int("num_processes", num_processes)
    if process_id is not None:
        high = None if num_processes is None else num_processes - 1
        checks.integer("process_id", process_id, low=0, high=high)


def data_parallel(replicas=None):
    """Train on several devices on JAX: set `keras.distribution.DataParallel`.

    The JAX counterpart of `choose_strategy`, to call before the model is built.
    Every batch is one global array split on its first axis across the devices,
    and the variables are replicated: batch statistics and the loss cover the
    global batch, as on one device. The batch size must be a multiple of the
    number of devices.

    With several processes (see `initialize_processes`), the devices are those
    of every process, and each process feeds `fit` its own part of every global
    batch: `global_batch // jax.process_count()` images, the parts in process
    order making the global batch. The `keras_barlow.data` loaders read their
    part by default (`Options.shard_index`, `shard_count`). Keras' own
    sharding of the input (of `tf.data` datasets; it refuses any other input)
    is off, `auto_shard_dataset=False`: each process's input is already its part.

    Args:
        replicas: None for all devices (e.g. every GPU), or N for the first N
            (one process only).

    Returns:
        The `keras.distribution.DataParallel` now set for the process;
        `distribution.device_mesh.devices.size` devices share each batch.

    Raises:
        RuntimeError: the Keras backend is not JAX.
        ValueError: `replicas` is more than the devices there are, or is given
            with several processes.

    Example:

    ```python
    distribution = keras_barlow.distribute.data_parallel()
    model = keras_barlow.presets.get("cifar10-resnet18").model()
    ```
    """
    _require_jax("data_parallel", "On TensorFlow, use `choose_strategy()`.")
    devices = keras.distribution.list_devices()
    if replicas is not None:
        devices = _first_devices(devices, replicas)
    distribution = keras.distribution.DataParallel(
        devices=devices, auto_shard_dataset=False
    )
    keras.distribution.set_distribution(distribution)
    return distribution


def _first_devices(devices, replicas):
    import jax

    replicas = checks.positive_int("replicas", replicas)
    if jax.process_count() > 1:
        raise ValueError(
            "`replicas` chooses devices of one process; this run has "
            f"{jax.process_count()} processes, which all train on all of their "
            f"devices. Received: replicas={replicas}. Leave it out, or make each "
            "process see fewer devices (e.g. CUDA_VISIBLE_DEVICES)."
        )
    if replicas > len(devices):
        raise ValueError(
            f"`replicas` is more than the {len(devices)} device(s) that JAX "
            f"sees. Received: replicas={replicas}."
        )
    return devices[:replicas]


def _require_jax(function, instead):
    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"`{function}` distributes Keras' JAX backend; this process runs "
            f"KERAS_BACKEND={keras.backend.backend()!r}. {instead}"
        )


def is_chief(strategy=None):
    """Whether this process writes checkpoints, logs and exports: one per run.

    On TensorFlow, the strategy says (`strategy.extended.should_checkpoint`: the
    chief of a `MultiWorkerMirroredStrategy`, from `TF_CONFIG`; True on one
    machine). On JAX, the process of `jax.process_index()` 0.

    Args:
        strategy: the `tf.distribute.Strategy` (default: the current one);
            unused on JAX.

    Returns:
        bool.
    """
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index() == 0
    if strategy is None:
        strategy = _tensorflow("is_chief").distribute.get_strategy()
    return bool(getattr(strategy.extended, "should_checkpoint", True))


@contextlib.contextmanager
def output_dir(strategy, directory):
    """`directory` on the chief; on another worker, a scratch folder removed at exit.

    Every worker of a multi-worker run writes its checkpoints, logs and exports (the
    collective operations need them all), but only the chief's may go to the shared
    `directory`.

    Args:
        strategy: as for `is_chief` (None on JAX).
        directory: the run's shared output folder.

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


@contextlib.contextmanager
def without_distribution():
    """No Keras distribution inside: for what one process does alone (JAX).

    Under `data_parallel` with several JAX processes, every Keras variable made
    is placed on the devices of all processes, a step that all of them must take
    together. `model.save_weights` makes one (Keras' reference optimizer), so a
    write by the chief alone (`is_chief`) must run in this context, as
    `TrainingCheckpoint` does. Reading the replicated weights needs no other
    process. The distribution is set again at exit; without one (e.g. on
    TensorFlow), nothing changes.

    Example:

    ```python
    if keras_barlow.distribute.is_chief():
        with keras_barlow.distribute.without_distribution():
            model.save_weights("runs/barlow/last.weights.h5")
    ```
    """
    distribution = keras.distribution.distribution()
    if distribution is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(distribution)


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
    tf = _tensorflow("shard_by_data")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def wait_for_all_workers(strategy):
    """Block until every worker of `strategy` gets here (a no-op on one machine).

    A multi-worker chief reports a worker that exits before it as a crash: call this
    last on every worker. On JAX, a barrier of all processes (`strategy` unused).
    """
    if keras.backend.backend() == "jax":
        import jax
        from jax.experimental import multihost_utils

        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("keras_barlow.wait_for_all_workers")
        return
    tf = _tensorflow("wait_for_all_workers")
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
        major = _gpu_compute_capability()
        choice = "bfloat16" if major >= 8 else "float16" if major >= 7 else "none"
    return POLICIES[choice]


def _gpu_compute_capability():
    """The major CUDA compute capability of the first GPU; 0 without a GPU."""
    if keras.backend.backend() == "jax":
        import jax

        capability = getattr(jax.devices()[0], "compute_capability", None)
        return int(str(capability).split(".")[0]) if capability else 0
    tf = _tensorflow("auto_dtype_policy")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return 0
    details = tf.config.experimental.get_device_details(gpus[0])
    return details.get("compute_capability", (0, 0))[0]


def _tensorflow(function, instead=None):
    """The `tensorflow` module, for the function `function` that needs it.

    Raises:
        ImportError: TensorFlow is not installed; the message names the extras
            and, when given, what to do `instead`.
    """
    return _backend.import_tensorflow(f"`keras_barlow.distribute.{function}`", instead)
