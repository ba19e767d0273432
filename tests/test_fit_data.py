"""The data given to `BarlowTwins.fit` (`keras_barlow.fit_data`), on both backends.

Dict batches, batches that do not split over devices, any iterable of batches,
and the checks that must stop a bad batch before its step.
"""

import warnings

import keras
import numpy as np
import pytest
from conftest import StepLosses, tiny_model, to_numpy, uint8_images

import keras_barlow
from keras_barlow import batches, fit_data

pytestmark = pytest.mark.core

BACKEND = keras.backend.backend()
SIZE = 8


def canvases(count, side=16, seed=0):
    """A full-resolution batch of `count` images on `side` x `side` canvases."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(4, side + 1, (count, 2)).astype(np.int32)
    images = np.zeros((count, side, side, 3), np.uint8)
    for image, (height, width) in zip(images, sizes, strict=True):
        image[:height, :width] = rng.integers(0, 256, (height, width, 3))
    return batches.full_resolution_batch(images, sizes)


def steps_of(model):
    return int(to_numpy(model.train_step_count))


def weights_of(model):
    return [to_numpy(weight) for weight in model.weights]


@pytest.fixture
def two_devices():
    """`keras.distribution.DataParallel` over 2 devices (JAX, see conftest)."""
    if BACKEND != "jax":
        pytest.skip("keras.distribution shards batches on JAX")
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    yield
    keras.distribution.set_distribution(None)


def test_fit_draws_new_views_at_every_step():
    # A learning rate of 0: the weights stay, so the two steps on the same batch
    # differ only by their views (a step that reused step 0's seed would repeat).
    model = tiny_model(optimizer=keras.optimizers.SGD(0.0))
    images = np.concatenate([uint8_images(4, SIZE)] * 2)
    losses = StepLosses()
    model.fit(images, batch_size=4, shuffle=False, verbose=0, callbacks=[losses])
    assert len(losses.losses) == 2
    assert abs(losses.losses[0] - losses.losses[1]) > 1e-3 * abs(losses.losses[0])


def test_dict_batches_of_floats_scaled_to_0_1_are_refused():
    batch = canvases(8)
    batch[batches.IMAGES] = batch[batches.IMAGES].astype(np.float32) / 255.0
    model = tiny_model()
    initial = weights_of(model)
    with pytest.raises(ValueError, match="taken as scaled to \\[0, 1\\]"):
        model.fit(batch, batch_size=4, verbose=0)
    for weight, start in zip(weights_of(model), initial, strict=True):
        np.testing.assert_array_equal(weight, start)


@pytest.mark.parametrize("form", ["arrays", "tf.data"])
def test_integer_images_other_than_uint8_are_refused_naming_their_dtype(form):
    model = tiny_model()
    initial = weights_of(model)
    data = uint8_images(8, SIZE).astype(np.int64)
    batch_size = 4
    if form == "tf.data":
        tf = pytest.importorskip("tensorflow")
        data, batch_size = tf.data.Dataset.from_tensor_slices(data).batch(4), None
    with pytest.raises(ValueError, match="Received: dtype int64. Cast them to uint8"):
        model.fit(data, batch_size=batch_size, verbose=0)
    for weight, start in zip(weights_of(model), initial, strict=True):
        np.testing.assert_array_equal(weight, start)


@pytest.mark.parametrize("bad_size", [(0, 0), (-3, 5), (17, 4)])
def test_hand_made_image_sizes_outside_the_canvas_are_refused(bad_size):
    batch = canvases(8)
    batch[batches.IMAGE_SIZES][5] = bad_size
    model = tiny_model()
    with pytest.raises(ValueError, match="from \\(1, 1\\) to the canvas"):
        model.fit(batch, batch_size=4, verbose=0)
    assert steps_of(model) in (0, 1)  # the bad batch (the second) never trains


def test_dict_batches_train_with_labels_or_without():
    model = tiny_model()
    history = model.fit(canvases(8), batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and steps_of(model) == 2
    labelled = {**canvases(8), batches.LABELS: np.arange(8, dtype=np.int32)}
    model.fit(labelled, batch_size=4, verbose=0)
    assert steps_of(model) == 4


def test_dict_batches_without_an_augmenter_say_what_to_do():
    model = tiny_model(augmenter=None)
    with pytest.raises(ValueError, match="give the model an augmenter"):
        model.fit(canvases(8), batch_size=4, verbose=0)


def test_a_custom_augmenter_given_dict_batches_says_what_to_do():
    class Flip(keras.layers.Layer):
        def call(self, images, seed=None):
            images = keras.ops.cast(images, "float32") / 255.0
            return images, keras.ops.flip(images, axis=2)

    model = tiny_model(augmenter=Flip())
    with pytest.raises(ValueError, match="full_resolution=False"):
        model.fit(canvases(8), batch_size=4, verbose=0)


def test_a_batch_of_one_says_why_it_cannot_train():
    model = tiny_model()
    with pytest.raises(ValueError, match="at least 2"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JAX warns at each skipped batch
        model.fit(uint8_images(1, SIZE), batch_size=1, verbose=0)
    assert steps_of(model) == 0


@pytest.mark.jax_only
def test_a_generator_of_batches_trains_and_a_bad_batch_stops_it():
    def images(count, scaled_at=None):
        for index in range(count):
            batch = uint8_images(4, SIZE, seed=index).astype(np.float32)
            yield batch / 255.0 if index == scaled_at else batch

    model = tiny_model()
    model.fit(images(3), verbose=0)
    assert steps_of(model) == 3
    with pytest.raises(ValueError, match="taken as scaled to \\[0, 1\\]"):
        model.fit(images(3, scaled_at=1), verbose=0)
    assert steps_of(model) in (3, 4)


@pytest.mark.jax_only
def test_a_reiterable_of_dict_batches_trains_every_epoch():
    loader = [canvases(4, seed=index) for index in range(3)]  # like a DataLoader
    model = tiny_model()
    history = model.fit(loader, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and steps_of(model) == 6


@pytest.mark.jax_only
def test_a_grain_dataset_trains_and_a_bad_batch_stops_it():
    grain = pytest.importorskip("grain")
    good = [uint8_images(4, SIZE, seed=index) for index in range(3)]
    model = tiny_model()
    model.fit(grain.MapDataset.source(good), epochs=1, verbose=0)
    assert steps_of(model) == 3
    bad = [*good[:2], good[2].astype(np.float32) / 255.0]
    with pytest.raises(ValueError, match="taken as scaled"):
        model.fit(grain.MapDataset.source(bad), epochs=1, verbose=0)


@pytest.mark.parametrize("form", ["grain", "generator", "tf.data"])
def test_fit_on_a_pipeline_warns_neither_of_shuffle_nor_of_running_out(form):
    """Keras warns that it ignores `shuffle` and that such data "ran out"."""
    source = [uint8_images(4, SIZE, seed=index) for index in range(3)]
    if form == "grain":
        data = pytest.importorskip("grain").MapDataset.source(source)
        data = data.to_iter_dataset()  # of unknown length, as the loaders make
    elif form == "tf.data":
        tf = pytest.importorskip("tensorflow")
        data = tf.data.Dataset.from_tensor_slices(np.concatenate(source)).batch(4)
    else:
        data = ((batch,) for batch in source)
    model = tiny_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(data, verbose=0)
    assert steps_of(model) == 3
    assert not [str(w.message) for w in caught if "shuffle" in str(w.message)]
    assert not [str(w.message) for w in caught if "ran out" in str(w.message)]


def test_a_generator_for_several_epochs_is_refused_before_training():
    model = tiny_model()
    generator = ((uint8_images(4, SIZE, seed=index),) for index in range(3))
    with pytest.raises(ValueError, match="`x` is read at every epoch.*only once"):
        model.fit(generator, epochs=2, verbose=0)
    assert steps_of(model) == 0
    model.fit(generator, epochs=2, steps_per_epoch=1, verbose=0)  # the caller's count
    assert steps_of(model) == 2


@pytest.mark.jax_only
@pytest.mark.parametrize("framework", ["tensorflow", "torch"])
def test_tensors_of_other_frameworks_train_as_arrays(framework):
    """Before, they were read as iterables: each image a batch."""
    images = uint8_images(8, SIZE)
    if framework == "tensorflow":
        images = pytest.importorskip("tensorflow").constant(images)
    else:
        images = pytest.importorskip("torch").from_numpy(images)
    model = tiny_model()
    model.fit(images, batch_size=4, epochs=2, verbose=0)
    assert steps_of(model) == 4


@pytest.mark.jax_only
def test_a_torch_data_loader_of_uint8_images_trains():
    torch = pytest.importorskip("torch")
    images = torch.from_numpy(uint8_images(12, SIZE))
    loader = torch.utils.data.DataLoader(images, batch_size=4)
    model = tiny_model()
    model.fit(loader, epochs=2, verbose=0)
    assert steps_of(model) == 6
    # Its default collate makes lists: [images] and [images, labels].
    labels = torch.arange(12)
    for dataset in (
        torch.utils.data.TensorDataset(images),
        torch.utils.data.TensorDataset(images, labels),
    ):
        model.fit(torch.utils.data.DataLoader(dataset, batch_size=4), verbose=0)
    assert steps_of(model) == 12


@pytest.mark.jax_only
def test_a_short_last_batch_on_two_devices_is_skipped(two_devices):
    model = tiny_model()
    with pytest.warns(UserWarning, match="end with a batch of 1"):
        history = model.fit(uint8_images(9, SIZE), batch_size=4, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and steps_of(model) == 4


@pytest.mark.jax_only
def test_a_short_last_grain_batch_on_two_devices_is_skipped(two_devices):
    grain = pytest.importorskip("grain")
    source = [uint8_images(size, SIZE, seed=size) for size in (4, 4, 3)]
    model = tiny_model()
    with pytest.warns(UserWarning, match="A batch of 3"):
        model.fit(grain.MapDataset.source(source), verbose=0)
    assert steps_of(model) == 2


@pytest.mark.jax_only
def test_a_short_last_generator_batch_on_two_devices_is_skipped(two_devices):
    sizes = (4, 4, 3)
    model = tiny_model()
    generator = (uint8_images(size, SIZE, seed=size) for size in sizes)
    with pytest.warns(UserWarning, match="A batch of 3"):
        model.fit(generator, verbose=0)
    assert steps_of(model) == 2


@pytest.mark.jax_only
@pytest.mark.parametrize("form", ["generator", "grain"])
def test_an_iterable_without_a_batch_says_it_is_empty(form):
    if form == "grain":
        data = pytest.importorskip("grain").MapDataset.source([])
    else:
        data = iter([])
    model = tiny_model()
    with pytest.raises(ValueError, match=r"^The data is empty \(no batch\)"):
        model.fit(data, verbose=0)
    assert steps_of(model) == 0


@pytest.mark.jax_only
@pytest.mark.parametrize("form", ["generator", "grain"])
def test_data_whose_every_batch_is_skipped_says_so(two_devices, form):
    source = [uint8_images(3, SIZE, seed=seed) for seed in range(2)]
    if form == "grain":
        data = pytest.importorskip("grain").MapDataset.source(source)
    else:
        data = iter(source)
    model = tiny_model()
    with pytest.warns(UserWarning, match="A batch of 3"):
        with pytest.raises(ValueError, match="every batch was skipped"):
            model.fit(data, verbose=0)
    assert steps_of(model) == 0


@pytest.mark.jax_only
@pytest.mark.parametrize("batch_size", [3, 5])
def test_a_batch_size_that_does_not_split_over_devices_is_refused(
    two_devices, batch_size
):
    model = tiny_model()
    with pytest.raises(ValueError, match="a multiple of 2") as error:
        model.fit(uint8_images(10, SIZE), batch_size=batch_size, verbose=0)
    assert "2 device(s)" in str(error.value) and steps_of(model) == 0


@pytest.mark.jax_only
def test_a_tf_data_dataset_of_dict_batches_keeps_its_image_sizes():
    tf = pytest.importorskip("tensorflow")
    batch = canvases(8)
    dataset = tf.data.Dataset.from_tensor_slices(batch).batch(4)
    prepared = fit_data.prepared(dataset)
    seen = list(prepared.as_numpy_iterator())
    assert [set(element) for element in seen] == [set(batch)] * 2
    np.testing.assert_array_equal(
        np.concatenate([element[batches.IMAGE_SIZES] for element in seen]),
        batch[batches.IMAGE_SIZES],
    )
    model = tiny_model()
    model.fit(dataset, verbose=0)
    assert steps_of(model) == 2


@pytest.mark.jax_only
def test_evaluate_and_validation_data_skip_batches_that_do_not_split(two_devices):
    model = tiny_model()
    with pytest.warns(UserWarning, match="end with a batch of 1"):
        loss = model.evaluate(uint8_images(9, SIZE), batch_size=4, verbose=0)
    assert np.isfinite(loss[0] if isinstance(loss, list) else loss)
    with pytest.warns(UserWarning, match="end with a batch of 1"):
        history = model.fit(
            uint8_images(8, SIZE),
            batch_size=4,
            validation_data=uint8_images(9, SIZE, seed=1),
            verbose=0,
        )
    assert np.isfinite(history.history["val_loss"][0]) and steps_of(model) == 2


def test_evaluate_refuses_what_fit_refuses():
    batch = canvases(8)
    scaled = {**batch, batches.IMAGES: batch[batches.IMAGES] / np.float32(255)}
    with pytest.raises(ValueError, match="taken as scaled to \\[0, 1\\]"):
        tiny_model().evaluate(scaled, batch_size=4, verbose=0)
    batch[batches.IMAGE_SIZES][0] = (0, 0)
    with pytest.raises(ValueError, match="from \\(1, 1\\) to the canvas"):
        tiny_model().evaluate(batch, batch_size=4, verbose=0)


def test_the_augmenter_refuses_image_sizes_outside_the_canvas():
    batch = canvases(4)
    batch[batches.IMAGE_SIZES][2] = (17, 4)
    with pytest.raises(ValueError, match="from \\(1, 1\\) to the canvas"):
        keras_barlow.BarlowTwinsAugment(SIZE, "cifar")(batch)
