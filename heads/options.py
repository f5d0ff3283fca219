"""Head options (`--option key=value`) checked against what each head declares before it is built: the type
of its `__init__` annotation (bool, int, float) and the range in its `Head.option_limits`, so a bad value is
one line naming the option instead of a traceback from deep inside torch (`dropout=2`).

No torch here: `pipeline.options` checks every numeric option with the same `check_limits`.
"""
from __future__ import annotations

import math
from typing import Any, get_type_hints

from clipcache import InputError

Limits = tuple[float | None, float | None]  # (lowest, highest) value accepted, both included; None: unbounded


def check_limits(name: str, value: float, limits: Limits) -> None:
    """`value` within `limits` (NaN is within none), or one line naming the option and the range."""
    low, high = limits
    if low is not None and not value >= low:
        raise InputError(f"{name} must be {'0 or more' if low == 0 else f'at least {low}'}, got {value}")
    if high is not None and not value <= high:
        raise InputError(f"{name} must be at most {high}, got {value}")


def check_head_options(head: str, cls: type, options: dict[str, Any]) -> None:
    """Each given option has its declared type and lies within the head's `option_limits`."""
    hints = get_type_hints(cls.__init__)
    for key, value in options.items():
        name = f"--option {key}"
        kinds = set(getattr(hints.get(key), "__args__", (hints.get(key),)))  # `int | None` -> {int, NoneType}
        if value is None and type(None) in kinds:
            continue  # left to the head's choice
        if bool in kinds and not isinstance(value, bool):
            raise InputError(f"{name}: {head} takes true or false, got {value!r}")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if int in kinds and not (number and isinstance(value, int)):
            raise InputError(f"{name}: {head} takes a whole number, got {value!r}")
        if float in kinds and not number:
            raise InputError(f"{name}: {head} takes a number, got {value!r}")
        if key in cls.option_limits:
            check_limits(name, value, cls.option_limits[key])
        if number and not math.isfinite(value):
            raise InputError(f"{name} must be a finite number, got {value}")
