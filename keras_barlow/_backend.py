"""What differs between Keras backends: stateless random draws and replicas.

Everything else in the training core is written with `keras.ops`. Two things are
not in `keras.ops`:

* Stateless randomness from a seed *tensor*: `keras.random` has no fold-in or
  split, and on TensorFlow its `draw_seed` does not take a traced tensor. Seeds
  here are int32 `(2,)` tensors on every backend; TensorFlow draws with
  `tf.random.stateless_*`, JAX with a
  threefry key made from the same two words. The two backends draw different
  numbers from the same seed.
* Replicas. Under a `tf.distribute` strategy every replica runs its own copy of
  the step on its share of the batch, so batch statistics need collectives
  (`all_reduce`, `all_gather`) and each replica must draw other random numbers.
  On JAX, `keras.distribution.DataParallel` runs ONE program on the global batch
  sharded over the devices: statistics are global without any collective code,
  and the random draws equal one device's (threefry is partitionable). The
  collectives below are then the identity.
"""

import keras

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf
elif BACKEND == "jax":
    import jax
    import jax.numpy as jnp
else:  # pragma: no cover - depends on the environment
    raise ImportError(
        "keras_barlow runs on Keras' TensorFlow or JAX backend. Received: "
        f"KERAS_BACKEND={BACKEND!r}. Set KERAS_BACKEND=tensorflow or "
        "KERAS_BACKEND=jax before importing keras."
    )

TENSORFLOW_EXTRAS = (
    "`pip install keras-barlow[cpu]` (tensorflow-cpu) or "
    "`pip install keras-barlow[gpu]` (tensorflow[and-cuda])"
)


def import_tensorflow(feature, instead=None):
    """The `tensorflow` module, or an ImportError that says how to install it.

    Args:
        feature: what needs TensorFlow, for the message (e.g. "keras_barlow.export").
        instead: a sentence on what to do without TensorFlow, for the message;
            by default, that the rest of keras_barlow runs without it.
    """
    try:
        import tensorflow
    except ModuleNotFoundError as error:
        instead = instead or (
            "The rest of keras_barlow runs without it on KERAS_BACKEND=jax."
        )
        raise ImportError(
            f"{feature} needs TensorFlow, which is not installed. Install it with "
            f"{TENSORFLOW_EXTRAS}. {instead}"
        ) from error
    return tensorflow


# The step counter: int64 on TensorFlow (as in checkpoints written before JAX);
# JAX without x64 has no int64 and would warn.
COUNTER_DTYPE = "int64" if BACKEND == "tensorflow" else "int32"


# ----------------------------------------------------------------------------------
# Stateless random draws from int32 (2,) seeds.


def as_seed(seed):
    """An int32 `(2,)` seed tensor from an int, a pair or a tensor."""
    if isinstance(seed, int):
        seed = (seed, 0)
    return keras.ops.cast(keras.ops.convert_to_tensor(seed), "int32")


def fold_in(seed, data):
    """A new int32 `(2,)` seed from `seed` and an integer scalar `data`."""
    if BACKEND == "tensorflow":
        return tf.random.experimental.stateless_fold_in(
            tf.cast(seed, tf.int32), tf.cast(data, tf.int64)
        )
    data = jnp.asarray(data).astype(jnp.uint32)  # -1 (evaluation) wraps around
    return _seed_of(jax.random.fold_in(_key_of(seed), data))


def split(seed, count):
    """`count` independent int32 `(2,)` seeds from one, as a list."""
    if BACKEND == "tensorflow":
        return tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), count)
        )
    keys = jax.random.split(_key_of(seed), count)
    return [_seed_of(keys[index]) for index in range(count)]


def uniform(seed, shape, low=0.0, high=1.0):
    """float32 draws of `U(low, high)` of `shape` from an int32 `(2,)` seed."""
    if BACKEND == "tensorflow":
        return tf.random.stateless_uniform(
            shape, tf.cast(seed, tf.int32), minval=low, maxval=high
        )
    return jax.random.uniform(
        _key_of(seed), tuple(shape), jnp.float32, minval=low, maxval=high
    )


def _key_of(seed):
    words = jax.lax.bitcast_convert_type(jnp.asarray(seed, jnp.int32), jnp.uint32)
    return jax.random.wrap_key_data(words, impl="threefry2x32")


def _seed_of(key):
    return jax.lax.bitcast_convert_type(jax.random.key_data(key), jnp.int32)


def seed_for_call(seed_generator):
    """A new int32 `(2,)` seed from a layer's generator, different on every replica."""
    return fold_in_replica_id(keras.ops.cast(seed_generator.next(), "int32"))


# ----------------------------------------------------------------------------------
# Replicas: tf.distribute's replica context; nothing to do on JAX.


def replica_context():
    """The `tf.distribute` replica context on several replicas, else None."""
    if BACKEND != "tensorflow":
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def num_replicas(strategy=None):
    """Copies of the step that each run on a share of the global batch.

    TensorFlow: the replicas of `strategy`, by default of the current replica
    context or strategy. JAX: 1, as one program runs on the global batch (see
    `local_batch_shards` for the devices it is split over).
    """
    if BACKEND != "tensorflow":
        return 1
    if strategy is None:
        strategy = tf.distribute.get_replica_context() or tf.distribute.get_strategy()
    return strategy.num_replicas_in_sync


def local_batch_shards():
    """Devices of this process that the batch axis is split over (1 without sharding).

    JAX: from the `keras.distribution` in effect, e.g. `DataParallel` over 2
    devices gives 2; with several processes each feeds its own share of the
    global batch to its own devices. TensorFlow: `num_replicas()`.
    """
    if BACKEND == "tensorflow":
        return num_replicas()
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    devices = mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)]
    return max(1, devices // jax.process_count())


def sum_across_replicas(values):
    """All-reduce (sum) of a tensor or a list of tensors over the replicas."""
    context = replica_context()
    if context is None:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def gather_across_replicas(values):
    """The replicas' `(n, ...)` tensors concatenated along axis 0, for each value."""
    context = replica_context()
    if context is None:
        return values
    return [context.all_gather(value, axis=0) for value in values]


def fold_in_replica_id(seed):
    """An int32 `(2,)` seed made different on every replica of a `tf.distribute` run.

    Every replica runs the same program with the same seeds; without this their
    random draws would be identical. Outside a replica context (and on JAX, where
    one program covers all devices) the seed is returned unchanged.
    """
    if BACKEND != "tensorflow":
        return seed
    replica = tf.distribute.get_replica_context()
    if replica is None:
        return seed
    return tf.random.experimental.stateless_fold_in(
        seed, replica.replica_id_in_sync_group
    )


def on_several_workers():
    """Whether the current strategy is a MultiWorkerMirroredStrategy on > 1 worker."""
    if BACKEND != "tensorflow":
        return False
    strategy = tf.distribute.get_strategy()
    return isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ) and strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
