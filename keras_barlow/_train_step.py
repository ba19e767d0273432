"""The train and test steps of `BarlowTwins`, one mixin per Keras backend.

Keras asks a custom step for other signatures on each backend: on TensorFlow
`train_step(data)` with a `GradientTape`, on JAX the stateless
`train_step(state, data) -> (logs, state)`. Both run the same model code
(`make_views`, `_loss_terms`, `_update_metrics` of `BarlowTwins`); what differs is
the bookkeeping around it and the scaling for `tf.distribute`:

* TensorFlow: every replica holds the loss of the whole global batch and the
  optimizer sums gradients over replicas, so the loss is divided by R.
* JAX (`keras.distribution.DataParallel`): one program on the global batch; the
  gradient is the single-device gradient, with no factor of R anywhere.
"""

import contextlib
import warnings

import keras

from keras_barlow import _backend, batches, input_checks, losses


class TensorFlowTrainStep:
    """`train_step(data)` and `test_step(data)` for the TensorFlow backend."""

    def fit(self, *args, **kwargs):
        with _readable_run_time_errors():
            return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with _readable_run_time_errors():
            return super().evaluate(*args, **kwargs)

    def train_step(self, data):
        tf = _backend.tf
        view1, view2 = self.make_views(data, self._step_seed(self.train_step_count))
        with tf.GradientTape() as tape:
            loss, on_diag, off_diag, z1 = self._loss_terms(view1, view2, training=True)
            replica_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
            replica_loss = self.optimizer.scale_loss(replica_loss)
        gradients = tape.gradient(replica_loss, self.trainable_variables)
        # After the input checks, which the loss waits for: a refused batch
        # changes nothing, not even the optimizer's step count.
        with tf.control_dependencies([loss]):
            self.optimizer.apply(gradients, self.trainable_variables)
            self.train_step_count.assign_add(1)
        return self._update_metrics(loss, on_diag, off_diag, z1)

    def test_step(self, data):
        # A fixed seed: the validation loss of one epoch compares with the next.
        view1, view2 = self.make_views(data, self._step_seed(-1))
        return self._update_metrics(*self._loss_terms(view1, view2, training=False))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Overrides a private member of Keras' TensorFlow trainer (checked by
        # tests/test_model.py). Keras averages the first batch over all replicas
        # here only to learn its shapes. Under MultiWorkerMirroredStrategy that
        # reduce fails on a tuple of tensors (keras-team/keras#20585), and on any
        # strategy it fails obscurely on an uneven split; one replica's share has
        # the shapes and needs no communication (the train step checks the split).
        if self._distribute_strategy is None:
            return super()._maybe_symbolic_build(iterator, data_batch)
        tf = _backend.tf
        local_results = self.distribute_strategy.experimental_local_results
        for _, _, epoch_batches in iterator or ():
            try:
                first = next(epoch_batches)
            except StopIteration:
                raise ValueError(input_checks.EMPTY_DATA_MESSAGE) from None
            data_batch = tf.nest.map_structure(
                lambda value: local_results(value)[0], first
            )
            break
        return super()._maybe_symbolic_build(data_batch=data_batch)


class JaxTrainStep:
    """Stateless `train_step(state, data)` and `test_step(state, data)` for JAX."""

    def fit(self, *args, **kwargs):
        # Keras' JAX trainer empties the model's variables for the length of an
        # epoch (`_purge_model_variables`) and puts them back after each step. An
        # error raised by the data before the first step of an epoch has ended (a
        # bad batch found on the host) would leave them empty for good: keep the
        # values and put back any that are still missing. Checked by
        # tests/test_jax.py.
        if self.built and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        variables = {
            id(variable): variable
            for variable in (
                *self.trainable_variables,
                *self.non_trainable_variables,
                *self.optimizer.variables,
                *self.metrics_variables,
            )
        }.values()
        values = [(variable, variable.value) for variable in variables]
        try:
            return super().fit(*args, **kwargs)
        except BaseException:
            for variable, value in values:
                if variable._value is None:
                    variable.assign(value)
            raise

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_state, metrics_state = state
        if _too_small(data):
            self._skipped_small_batch = True
            return self._metrics_logs(metrics_state), state
        mapping = self._mapping(non_trainable=non_trainable)
        with keras.StatelessScope(state_mapping=mapping):
            view1, view2 = self.make_views(data, self._step_seed(self.train_step_count))

        def scaled_loss(trainable, non_trainable):
            mapping = self._mapping(trainable, non_trainable, optimizer_state)
            with keras.StatelessScope(state_mapping=mapping) as scope:
                terms = self._loss_terms(view1, view2, training=True)
                scaled = self.optimizer.scale_loss(terms[0])
            updated = _values(scope, self.non_trainable_variables, non_trainable)
            return scaled, (terms, updated)

        grad_fn = _backend.jax.value_and_grad(scaled_loss, has_aux=True)
        (_, (terms, non_trainable)), gradients = grad_fn(trainable, non_trainable)
        trainable, optimizer_state = self.optimizer.stateless_apply(
            optimizer_state, gradients, trainable
        )
        non_trainable = self._advance_step_count(non_trainable)
        logs, metrics_state = self._update_metrics_state(metrics_state, terms)
        return logs, (trainable, non_trainable, optimizer_state, metrics_state)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_state = state
        if _too_small(data):
            return self._metrics_logs(metrics_state), state
        mapping = self._mapping(trainable, non_trainable)
        with keras.StatelessScope(state_mapping=mapping):
            view1, view2 = self.make_views(data, self._step_seed(-1))
            terms = self._loss_terms(view1, view2, training=False)
        logs, metrics_state = self._update_metrics_state(metrics_state, terms)
        return logs, (trainable, non_trainable, metrics_state)

    def _mapping(self, trainable=None, non_trainable=None, optimizer_state=None):
        """Pairs (variable, value) for a `keras.StatelessScope`."""
        pairs = []
        for variables, values in (
            (self.trainable_variables, trainable),
            (self.non_trainable_variables, non_trainable),
            (self.optimizer.variables, optimizer_state),
        ):
            if values is not None:
                pairs.extend(zip(variables, values, strict=True))
        return pairs

    def _advance_step_count(self, non_trainable):
        index = _index_of(self.non_trainable_variables, self.train_step_count)
        non_trainable = list(non_trainable)
        non_trainable[index] = non_trainable[index] + 1
        return non_trainable

    def _update_metrics_state(self, metrics_state, terms):
        mapping = list(zip(self.metrics_variables, metrics_state, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self._update_metrics(*terms)
        return logs, _values(scope, self.metrics_variables, metrics_state)

    def _metrics_logs(self, metrics_state):
        mapping = list(zip(self.metrics_variables, metrics_state, strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            return {metric.name: metric.result() for metric in self.metrics}


def _too_small(data):
    """Whether a batch is too small for batch statistics; warns when it is.

    On JAX every batch size is static, so the step traced for such a batch (a
    short last batch) is a no-op: the epoch goes on and nothing is lost.
    """
    batch_size = keras.tree.flatten(data)[0].shape[0]  # images, or the first view
    if batch_size >= 2:
        return False
    warnings.warn(
        f"Skipping a batch of {batch_size} sample(s): batch statistics need at "
        f"least 2. {input_checks.batch_split_advice(1)}",
        stacklevel=2,
    )
    return True


@contextlib.contextmanager
def _readable_run_time_errors():
    """Re-raise a failed run-time check (this module's or the loss's) as a `ValueError`.

    TensorFlow reports a failed `tf.debugging.Assert` as "Graph execution error"
    with the node's trace first and the message last; the `ValueError` says what
    was wrong and what to do first, with TensorFlow's error chained.
    """
    try:
        yield
    except Exception as error:
        text = str(getattr(error, "message", error))
        marker = "assertion failed: "
        ours = (
            input_checks.PIXEL_RULE,
            input_checks.BATCH_SPLIT_RULE,
            batches.IMAGE_SIZE_RULE,
            losses.TOO_SMALL_BATCH_RULE,
        )
        if marker not in text or not any(rule in text for rule in ours):
            raise
        message = text[text.index(marker) + len(marker) :].split("\n")[0]
        message = message.replace("] [", " ").strip("[] ").replace(" .", ".")
        raise ValueError(message) from error


def _values(scope, variables, previous):
    """The variables' values at the end of a stateless scope."""
    values = []
    for variable, old in zip(variables, previous, strict=True):
        value = scope.get_current_value(variable)
        values.append(old if value is None else value)
    return values


def _index_of(variables, target):
    return next(i for i, variable in enumerate(variables) if variable is target)


TrainStep = TensorFlowTrainStep if _backend.BACKEND == "tensorflow" else JaxTrainStep
