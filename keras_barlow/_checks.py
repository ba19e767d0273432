"""One vocabulary for checking constructor and function arguments.

Every check names the argument and shows the value received, in the style of Keras
core: "`probability` must be in [0, 1]. Received: probability=1.5". Each returns
the value, normalized where that helps (`image_size` -> `(height, width)`), so a
constructor reads `self.rate = checks.positive("rate", rate)`.

Pure Python: no backend is imported here.
"""

import numbers


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def number(name, value, low=None, high=None, low_open=False, high_open=False):
    """A real number within `[low, high]` (ends open with `low_open`/`high_open`).

    Args:
        name: the argument's name, for the message.
        value: the value received.
        low, high: bounds, or None for no bound.
        low_open, high_open: whether the bound itself is excluded.

    Returns:
        `value`, unchanged.

    Raises:
        ValueError: if `value` is not a real number in the interval (NaN never is).
    """
    ok = _is_real(value) and value == value  # NaN != NaN
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(
            f"`{name}` must be {_interval(low, high, low_open, high_open)}. "
            f"Received: {name}={value!r}"
        )
    return value


def positive(name, value):
    """A real number > 0."""
    return number(name, value, low=0, low_open=True)


def non_negative(name, value):
    """A real number >= 0."""
    return number(name, value, low=0)


def probability(name, value):
    """A real number in [0, 1]."""
    return number(name, value, low=0, high=1)


def integer(name, value, low=None, high=None):
    """An int (not a bool) in `[low, high]`, returned as a Python int."""
    in_bounds = _is_int(value) and (low is None or value >= low)
    if not in_bounds or (high is not None and value > high):
        bounds = "" if low is None and high is None else " " + _interval(low, high)
        raise ValueError(f"`{name}` must be an int{bounds}. Received: {name}={value!r}")
    return int(value)


def positive_int(name, value):
    """An int >= 1, returned as a Python int."""
    return integer(name, value, low=1)


def non_negative_int(name, value):
    """An int >= 0, returned as a Python int."""
    return integer(name, value, low=0)


def choice(name, value, choices):
    """One of `choices`."""
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {tuple(choices)}. Received: {name}={value!r}"
        )
    return value


def interval(name, value, low=0.0):
    """A pair `(min, max)` of real numbers with `low <= min <= max`, as a tuple."""
    try:
        pair = tuple(value)
    except TypeError:  # not iterable
        pair = ()
    if len(pair) != 2 or not all(_is_real(x) for x in pair):
        pair = None
    if pair is None or not low <= pair[0] <= pair[1]:
        raise ValueError(
            f"`{name}` must be a pair (min, max) with {low} <= min <= max. "
            f"Received: {name}={value!r}"
        )
    return pair


def image_size(name, value):
    """`(height, width)` from an int or a pair of positive ints."""
    try:
        pair = (value, value) if _is_real(value) else tuple(value)
    except TypeError:  # not iterable
        pair = ()
    if len(pair) != 2 or not all(_is_int(x) and x > 0 for x in pair):
        raise ValueError(
            f"`{name}` must be a positive int or a pair (height, width) of them. "
            f"Received: {name}={value!r}"
        )
    return tuple(int(x) for x in pair)


def _interval(low, high, low_open=False, high_open=False):
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return "a number"
