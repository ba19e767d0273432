"""LARS, the optimizer of the Barlow Twins recipe, as a Keras 3 optimizer.

Layer-wise Adaptive Rate Scaling (You et al., 2017) in the form of the paper's code
(facebookresearch/barlowtwins `main.py`): for every variable `w` with gradient `g`

    g = g + weight_decay * w                      # unless excluded from weight decay
    g = g * eta * |w| / |g|  (1 if |w| or |g| is 0)   # unless excluded from adaptation
    mu = momentum * mu + g
    w = w - learning_rate * mu

Biases and normalization parameters (variables with ndim <= 1) are excluded from both
by default, and may have their own learning rate.
"""

import re

import keras
from keras import ops

from keras_barlow import _checks as checks


@keras.saving.register_keras_serializable(package="keras_barlow")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling with momentum, as in Barlow Twins.

    Each variable's step is rescaled by the trust ratio `eta * |w| / |g|` (Euclidean
    norms of the whole variable and of its gradient, weight decay included), so
    every layer moves by about `eta * learning_rate` of its own norm, whatever the
    scale of its gradient. The weight decay is added to the gradient before the
    trust ratio, as in the paper's code (not decoupled as in AdamW).

    By default, variables with ndim <= 1 (biases, batch-normalization `gamma` and
    `beta`) get neither weight decay nor the trust ratio, and their learning rate is
    `learning_rate * bias_learning_rate_multiplier` (the paper: 0.0048 / 0.2).

    `exclude_from_weight_decay` and `exclude_from_adaptation` take lists of regular
    expressions, as in the TF Model Garden LARS and Keras `AdamW`: a variable is
    excluded when one of them is found (`re.search`) in its path, e.g.
    `"dense_1/bias"`. A list *replaces* the default ndim <= 1 rule, so `[]` applies
    weight decay (or the trust ratio) to every variable and
    `["bias", "gamma", "beta"]` excludes by name only. The Keras method
    `optimizer.exclude_from_weight_decay(var_list=..., var_names=...)` adds
    exclusions on top. The learning-rate multiplier always applies to the
    variables with ndim <= 1.

    Args:
        learning_rate: float, or a `keras.optimizers.schedules.LearningRateSchedule`
            such as `keras_barlow.schedules.WarmupCosine`.
        momentum: float in [0, 1).
        weight_decay: float >= 0, added to the gradient as `weight_decay * w`.
        eta: float > 0, the trust coefficient.
        exclude_from_weight_decay: `None` for the ndim <= 1 rule, or a list of
            regular expressions matched against variable paths.
        exclude_from_adaptation: the same for the trust ratio.
        bias_learning_rate_multiplier: float >= 0, factor of the learning rate of
            the variables with ndim <= 1.
        **kwargs: the base optimizer arguments (`name`, `clipnorm`, `use_ema`,
            ...). The base class's decoupled `weight_decay` is replaced by the
            argument above.

    Example:

    ```python
    schedule = keras_barlow.schedules.WarmupCosine(0.2 * 2048 / 256,
                                                   total_steps=1000 * 625,
                                                   warmup_steps=10 * 625)
    optimizer = keras_barlow.optimizers.LARS(
        schedule, weight_decay=1.5e-6, bias_learning_rate_multiplier=0.0048 / 0.2)
    model.compile(optimizer=optimizer)
    ```
    """

    def __init__(
        self,
        learning_rate,
        momentum=0.9,
        weight_decay=1.5e-6,
        eta=0.001,
        exclude_from_weight_decay=None,
        exclude_from_adaptation=None,
        bias_learning_rate_multiplier=1.0,
        **kwargs,
    ):
        if isinstance(learning_rate, (int, float)):  # else a schedule or a variable
            learning_rate = float(checks.positive("learning_rate", learning_rate))
        super().__init__(learning_rate=learning_rate, **kwargs)
        checks.number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.momentum = float(momentum)
        self.weight_decay = float(checks.non_negative("weight_decay", weight_decay))
        self.eta = float(checks.positive("eta", eta))
        self.bias_learning_rate_multiplier = float(
            checks.non_negative(
                "bias_learning_rate_multiplier", bias_learning_rate_multiplier
            )
        )
        self._weight_decay_patterns = _check_patterns(
            "exclude_from_weight_decay", exclude_from_weight_decay
        )
        self._adaptation_patterns = _check_patterns(
            "exclude_from_adaptation", exclude_from_adaptation
        )

    def build(self, variables):
        """Create the momentum buffers and decide once how each variable is updated."""
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        # Static per-variable choices, so that update_step has no branch on values.
        self._decays = [self._uses_weight_decay(v) for v in variables]
        self._adapts = [
            not _is_excluded(v, self._adaptation_patterns) for v in variables
        ]
        self._learning_rate_factors = [
            self.bias_learning_rate_multiplier if len(v.shape) <= 1 else 1.0
            for v in variables
        ]

    def _uses_weight_decay(self, variable):
        # Also honor Keras's `exclude_from_weight_decay(var_list, var_names)` method.
        return not _is_excluded(
            variable, self._weight_decay_patterns
        ) and self._use_weight_decay(variable)

    def update_step(self, gradient, variable, learning_rate):
        """One LARS step of `variable` (see the module docstring)."""
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        # The trust ratio needs the norm of the whole gradient: densify sparse ones.
        gradient = ops.cast(ops.convert_to_tensor(gradient), dtype)
        if self._decays[index]:
            gradient = gradient + ops.cast(self.weight_decay, dtype) * variable
        if self._adapts[index]:
            gradient = gradient * ops.cast(self._trust_ratio(variable, gradient), dtype)
        momentum = self.momentums[index]
        new_momentum = ops.cast(self.momentum, dtype) * momentum + gradient
        self.assign(momentum, new_momentum)
        rate = ops.cast(learning_rate, dtype) * self._learning_rate_factors[index]
        self.assign_sub(variable, rate * new_momentum)

    def _trust_ratio(self, variable, gradient):
        """`eta * |w| / |g|`, or 1 when either norm is 0; float32 scalar."""
        weight_norm = _norm(variable)
        gradient_norm = _norm(gradient)
        both_positive = ops.logical_and(weight_norm > 0.0, gradient_norm > 0.0)
        safe_gradient_norm = ops.where(both_positive, gradient_norm, 1.0)
        ratio = self.eta * weight_norm / safe_gradient_norm
        return ops.where(both_positive, ratio, 1.0)

    def _apply_weight_decay(self, variables):
        # The base class would also apply `weight_decay` decoupled (w -= lr * wd * w).
        # LARS adds it to the gradient in update_step instead.
        return

    def get_config(self):
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "eta": self.eta,
            "exclude_from_weight_decay": _to_list(self._weight_decay_patterns),
            "exclude_from_adaptation": _to_list(self._adaptation_patterns),
            "bias_learning_rate_multiplier": self.bias_learning_rate_multiplier,
        }


def _norm(tensor):
    tensor = ops.cast(tensor, "float32")
    return ops.sqrt(ops.sum(ops.square(tensor)))


def _is_excluded(variable, patterns):
    """The default rule (ndim <= 1) when `patterns` is None, else a pattern match."""
    if patterns is None:
        return len(variable.shape) <= 1
    return any(re.search(pattern, variable.path) for pattern in patterns)


def _check_patterns(name, patterns):
    if patterns is None:
        return None
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(
            f"`{name}` must be None or a list of regular expressions (strings) matched "
            f"against variable paths, e.g. ['bias', 'gamma', 'beta']. "
            f"Received: {name}={patterns!r}"
        )
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"`{name}` holds an invalid regular expression {pattern!r}: {error}"
            ) from error
    return tuple(patterns)


def _to_list(patterns):
    return None if patterns is None else list(patterns)
