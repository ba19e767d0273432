"""Distributed training is the single-device algorithm: MirroredStrategy and MWMS.

The references are independent of the distributed code: a NumPy loss on the global
batch, and the same model trained on one device (default strategy, no collectives)
from the same initial weights on the same global batches.
"""

import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import numpy_barlow_twins_loss
from conftest import view_pairs as random_view_pairs

import keras_barlow
from keras_barlow.input_checks import check_batch_split, check_global_batch

sys.path.insert(0, os.path.dirname(__file__))
import _multiworker_worker as tiny  # noqa: E402

METHODS = ("cross_correlation", "gram")
GLOBAL_BATCH = 8
REPLICAS = 2
RTOL = 1e-5  # the tolerance, and what float32 runs can promise
# The fit runs below are float64 end to end, the loss included: two replicas and
# one device then agree to ~1e-13 (measured), far inside RTOL.
FLOAT64_RTOL = 1e-9


@pytest.fixture(scope="module")
def strategy(mirrored_strategy):
    return mirrored_strategy


def split_across_replicas(strategy, *arrays):
    """Per-replica values: replica r gets the r-th equal slice of each array."""

    def slices(context):
        size = len(arrays[0]) // context.num_replicas_in_sync
        start = context.replica_id_in_sync_group * size
        return tuple(tf.constant(array[start : start + size]) for array in arrays)

    return strategy.experimental_distribute_values_from_function(slices)


def assert_all_close(actual, expected, rtol=RTOL):
    """Each pair of arrays agrees within `rtol`, relative to the expected norm."""
    assert len(actual) == len(expected)
    errors = [
        np.linalg.norm(a - e) / np.linalg.norm(e)
        for a, e in zip(actual, expected, strict=True)
    ]
    assert max(errors) < rtol, errors


# ---- the loss: one global scalar on every replica ------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_every_replica_gets_the_global_loss_and_r_times_its_gradient_share(
    strategy, method
):
    rng = np.random.default_rng(1)
    z1 = rng.normal(size=(GLOBAL_BATCH, 24)).astype(np.float32)
    z2 = (z1 + rng.normal(size=z1.shape)).astype(np.float32)

    def loss_and_gradient(z1, z2):
        with tf.GradientTape() as tape:
            tape.watch(z1)
            loss = keras_barlow.barlow_twins_loss(z1, z2, method=method)
        return loss, tape.gradient(loss, z1)

    @tf.function
    def on_every_replica(per_replica):
        return strategy.run(loss_and_gradient, args=per_replica)

    losses, gradients = on_every_replica(split_across_replicas(strategy, z1, z2))
    losses = [float(loss) for loss in strategy.experimental_local_results(losses)]
    expected = numpy_barlow_twins_loss(z1, z2)
    np.testing.assert_allclose(losses, [expected] * REPLICAS, rtol=RTOL)

    # Every replica's copy of the loss sends gradient back through the
    # all-reduces, so replica r holds R x dL/dz_r: the reason train_step divides
    # the loss by R before the optimizer sums the replicas' gradients.
    _, single_gradient = loss_and_gradient(tf.constant(z1), tf.constant(z2))
    gathered = np.concatenate(strategy.experimental_local_results(gradients))
    assert_all_close([gathered / REPLICAS], [single_gradient.numpy()])


@pytest.mark.parametrize(
    "per_replica, gathers",
    [
        (8, False),  # global N = 16: 2N >= D = 24, the D x D all-reduce
        (4, True),  # global N = 8: 2N < D, the Gram route (all-gather)
    ],
)
def test_auto_method_is_chosen_from_the_global_batch(strategy, per_replica, gathers):
    # With 8 per replica, the per-replica batch alone (2 x 8 < 24) would pick gram.
    z = np.zeros((REPLICAS * per_replica, 24), np.float32)

    @tf.function
    def loss(per_replica_values):
        return strategy.run(keras_barlow.barlow_twins_loss, args=per_replica_values)

    graph = loss.get_concrete_function(split_across_replicas(strategy, z, z)).graph
    op_types = {op.type for op in graph.get_operations()}
    assert ("CollectiveGatherV2" in op_types) == gathers


# ---- fit on two replicas is fit on one device ----------------------------------------


class FirstStepWeights(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.weights = self.model.get_weights()


@pytest.fixture(scope="module")
def initial_weights():
    keras.utils.set_random_seed(0)  # the same start whatever ran before
    return tiny.tiny_barlow_twins("auto").get_weights()


@pytest.fixture(scope="module")
def view_pairs():
    return random_view_pairs(tiny.STEPS * GLOBAL_BATCH)


def run(model, initial_weights, view_pairs):
    model.set_weights(initial_weights)
    first_step = FirstStepWeights()
    losses = tiny.train(model, *view_pairs, GLOBAL_BATCH, callbacks=[first_step])
    return dict(
        losses=losses,
        weights=model.get_weights(),
        first_step_weights=first_step.weights,
        model=model,
    )


@pytest.fixture(scope="module")
def single_device_runs(initial_weights, view_pairs):
    return {
        method: run(tiny.tiny_barlow_twins(method), initial_weights, view_pairs)
        for method in METHODS
    }


@pytest.fixture(scope="module")
def mirrored_runs(strategy, initial_weights, view_pairs):
    runs = {}
    for method in METHODS:
        with strategy.scope():
            model = tiny.tiny_barlow_twins(method)
        runs[method] = run(model, initial_weights, view_pairs)
    return runs


@pytest.mark.parametrize("method", METHODS)
def test_two_replicas_train_exactly_like_one_device(
    single_device_runs, mirrored_runs, initial_weights, method
):
    single, mirrored = single_device_runs[method], mirrored_runs[method]
    assert mirrored["model"].distribute_strategy.num_replicas_in_sync == REPLICAS
    assert len(single["losses"]) == tiny.STEPS
    np.testing.assert_allclose(mirrored["losses"], single["losses"], rtol=FLOAT64_RTOL)
    # All weights, the moving statistics of the synchronized BN layers included.
    assert_all_close(mirrored["weights"], single["weights"], rtol=FLOAT64_RTOL)
    moved = [
        np.linalg.norm(w - w0) / np.linalg.norm(w)
        for w, w0 in zip(single["weights"], initial_weights, strict=True)
    ]
    assert min(moved) > 100 * RTOL  # every weight moved far more than the tolerance


def test_two_replica_update_is_not_twice_the_single_device_update(
    single_device_runs, mirrored_runs, initial_weights
):
    # Each replica holds the loss of the whole global batch and the optimizer sums
    # the replicas' gradients: without train_step's division by R, the first SGD
    # step on 2 replicas would be exactly 2x the one-device step (ratio 2, not 1).
    single, mirrored = (
        runs["cross_correlation"] for runs in (single_device_runs, mirrored_runs)
    )
    model = single["model"]
    for index, variable in enumerate(model.weights):
        if not variable.trainable:
            continue
        single_step = single["first_step_weights"][index] - initial_weights[index]
        mirrored_step = mirrored["first_step_weights"][index] - initial_weights[index]
        ratio = np.linalg.norm(mirrored_step) / np.linalg.norm(single_step)
        assert abs(ratio - 1) < FLOAT64_RTOL, (variable.path, ratio)
        assert_all_close([mirrored_step], [single_step], rtol=FLOAT64_RTOL)


# ---- two worker processes ------------------------------------------------------------


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_workers_train_exactly_like_one_device(
    single_device_runs, initial_weights, view_pairs, tmp_path
):
    inputs = tmp_path / "inputs.npz"
    np.savez(
        inputs,
        x1=view_pairs[0],
        x2=view_pairs[1],
        global_batch_size=GLOBAL_BATCH,
        methods=np.array(METHODS),
        num_weights=len(initial_weights),
        **{f"weight_{i}": w for i, w in enumerate(initial_weights)},
    )
    ports = ",".join(str(port) for port in free_ports(REPLICAS))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    logs = [tmp_path / f"worker_{task}.log" for task in range(REPLICAS)]
    workers = []
    try:
        for task, log in enumerate(logs):  # both at once: each waits for the other
            # The child keeps its own copy of the log's file descriptor.
            with log.open("w") as output:
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            tiny.__file__,
                            str(task),
                            ports,
                            str(inputs),
                            str(tmp_path / f"outputs_{task}.npz"),
                        ],
                        env=env,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )
        for worker in workers:
            worker.wait(timeout=120)
    finally:
        for worker in workers:
            worker.kill()
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 0, log.read_text()[-3000:]

    for task in range(REPLICAS):
        outputs = np.load(tmp_path / f"outputs_{task}.npz")
        assert int(outputs["replicas"]) == REPLICAS
        for method in METHODS:
            single = single_device_runs[method]
            np.testing.assert_allclose(
                outputs[f"{method}/losses"], single["losses"], rtol=FLOAT64_RTOL
            )
            weights = [
                outputs[f"{method}/weight_{index}"]
                for index in range(len(single["weights"]))
            ]
            assert_all_close(weights, single["weights"], rtol=FLOAT64_RTOL)


# ---- augmentation draws differ across replicas ---------------------------------------


def test_replicas_draw_different_views_of_identical_images(strategy):
    with strategy.scope():
        model = keras_barlow.BarlowTwins(
            tiny.tiny_encoder(),
            projector_dims=(8,),
            augmenter=keras_barlow.BarlowTwinsAugment(8, preset="cifar"),
            seed=3,
        )
    images = np.random.default_rng(4).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)

    def views_at(step):
        # Identical images on every replica; the seed of a training step.
        return strategy.experimental_local_results(
            strategy.run(
                lambda: model.make_views(tf.constant(images), model._step_seed(step))
            )
        )

    replica0, replica1 = views_at(0)
    later0, _ = views_at(1)
    for view in (0, 1):
        assert np.abs(replica0[view] - replica1[view]).max(axis=(1, 2, 3)).min() > 1e-3
        assert np.abs(replica0[view] - later0[view]).max(axis=(1, 2, 3)).min() > 1e-3


# ---- clear errors for batches that cannot be split -----------------------------------


@pytest.mark.parametrize(
    "batch_size, replicas, received",
    [
        (7, 2, r"a global batch of 7 for 2 replica\(s\)"),
        (2, 2, r"a global batch of 2 for 2 replica\(s\)"),
        (1, 1, r"a global batch of 1 for 1 replica\(s\)"),
        (12, 8, r"a global batch of 12 for 8 replica\(s\)"),
    ],
)
def test_check_global_batch_rejects_uneven_or_too_small_splits(
    batch_size, replicas, received
):
    dataset = tf.data.Dataset.from_tensor_slices(np.zeros((24, 2))).batch(
        batch_size, drop_remainder=True
    )
    with pytest.raises(ValueError, match=received) as error:
        check_global_batch(dataset, replicas)
    assert "drop_remainder=True" in str(error.value)


@pytest.mark.parametrize("batch_size, replicas", [(8, 2), (6, 3), (2, 1)])
def test_check_global_batch_accepts_even_splits_and_unknown_sizes(batch_size, replicas):
    dataset = tf.data.Dataset.from_tensor_slices(np.zeros((24, 2)))
    assert (
        check_global_batch(dataset.batch(batch_size, drop_remainder=True), replicas)
        is None
    )
    # The rule, written out: equal shares of at least 2 samples each. Every static
    # size is accepted exactly when it follows it, the others are refused.
    for size in range(1, 13):
        static = dataset.batch(size, drop_remainder=True)
        if size % replicas == 0 and size // replicas >= 2:
            check_global_batch(static, replicas)
        else:
            with pytest.raises(ValueError, match=f"global batch of {size} for"):
                check_global_batch(static, replicas)
        # JAX's rule: a multiple of the devices, at least 2 samples in all.
        if size % replicas == 0 and size >= 2:
            check_batch_split(size, replicas, smallest=2)
        else:
            with pytest.raises(ValueError, match=f"global batch of {size} for"):
                check_batch_split(size, replicas, smallest=2)
        # A size unknown until the step runs is left to fit (which skips a
        # batch that does not split), whatever the batch size.
        assert dataset.batch(size).element_spec.shape[0] is None
        check_global_batch(dataset.batch(size), replicas)
    check_global_batch(np.zeros((7, 2)), replicas)  # not a dataset: not checked


def pair_dataset(count, batch_size, drop_remainder):
    x1, x2 = random_view_pairs(count)
    return tf.data.Dataset.from_tensor_slices((x1, x2)).batch(
        batch_size, drop_remainder=drop_remainder
    )


@pytest.mark.parametrize("batch_size", [7, 2])
def test_fit_and_evaluate_refuse_a_static_batch_that_does_not_split(
    strategy, batch_size
):
    with strategy.scope():
        model = tiny.tiny_barlow_twins("auto")
    dataset = pair_dataset(14, batch_size, drop_remainder=True)
    for call in (model.fit, model.evaluate):
        with pytest.raises(ValueError, match=f"global batch of {batch_size} for 2"):
            call(dataset, verbose=0)
    assert model.optimizer.iterations.numpy() == 0


def test_batches_of_unknown_size_that_do_not_split_are_skipped(strategy):
    with strategy.scope():
        model = tiny.tiny_barlow_twins("auto")
    initial_weights = model.get_weights()
    # No drop_remainder: the batch size is unknown until the step runs. A batch
    # of 5 (3 + 2: unequal shares) or 2 (1 + 1: too small) trains nothing.
    for count in (5, 2):
        dataset = pair_dataset(count, GLOBAL_BATCH, drop_remainder=False)
        assert dataset.element_spec[0].shape[0] is None
        with pytest.warns(UserWarning, match="are skipped"):
            with pytest.raises(ValueError, match="every batch was skipped") as error:
                model.fit(dataset, verbose=0)
        assert "drop_remainder=True" in str(error.value)
        for weight, initial in zip(model.get_weights(), initial_weights, strict=True):
            np.testing.assert_array_equal(weight, initial)
        assert int(model.optimizer.iterations.numpy()) == 0

    # 10 samples in batches of 8: the short last batch (1 + 1) is skipped, and the
    # epoch ends with the weights of a fit on the first batch alone.
    with pytest.warns(UserWarning, match="are skipped"):
        model.fit(pair_dataset(10, GLOBAL_BATCH, drop_remainder=False), verbose=0)
    skipped = model.get_weights()
    assert int(model.optimizer.iterations.numpy()) == 1
    model.set_weights(initial_weights)
    first_batch = pair_dataset(10, GLOBAL_BATCH, drop_remainder=True)
    model.fit(first_batch, verbose=0)
    for weight, expected in zip(skipped, model.get_weights(), strict=True):
        np.testing.assert_array_equal(weight, expected)
