"""Pictures remembered by what they were drawn from.

Drawing takes a tenth of a second or more per chart, and the same stored report is drawn
again and again (the console on every request for a version, the card for each of its
files). The public chart functions are memoised on a digest of their arguments as JSON, so
the same data gives the same :class:`~mlsteward.report.charts.svg.Picture` without drawing;
different data never shares an entry. The cache is small and per process.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

SIZE = 128
"""Entries kept (the least recently used go first): a few models' worth of pictures."""

P = ParamSpec("P")
R = TypeVar("R")

_entries: OrderedDict[str, Any] = OrderedDict()
_lock = threading.Lock()


def _plain(o: Any) -> Any:
    """Arguments that are not JSON as data: a config by its fields, a dataclass (a drift
    check, an audit event) by its fields, a time as ISO text, anything else by its type and
    text (which never matches data it is not)."""
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return f"{type(o).__qualname__}:{o!s}"


def _key(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    try:
        text = json.dumps([name, args, kwargs], sort_keys=True, default=_plain)
    except (TypeError, ValueError):  # not representable: drawn every time
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def memoised(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` remembered by its arguments (lists come back as new lists of the same
    pictures, which are immutable). Iterators are drawn from, never remembered."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if any(_consumable(a) for a in (*args, *kwargs.values())):
            return fn(*args, **kwargs)
        key = _key(fn.__qualname__, args, kwargs)
        if key is not None:
            with _lock:
                if key in _entries:
                    _entries.move_to_end(key)
                    found = _entries[key]
                    return list(found) if isinstance(found, list) else found  # type: ignore[return-value]
        value = fn(*args, **kwargs)
        if key is not None:
            with _lock:
                _entries[key] = list(value) if isinstance(value, list) else value
                while len(_entries) > SIZE:
                    _entries.popitem(last=False)
        return value

    return wrapper


def _consumable(value: Any) -> bool:
    """An iterator or generator would be used up by computing the key."""
    return hasattr(value, "__next__")


def clear() -> None:
    """Forget every picture (tests that time drawing start from here)."""
    with _lock:
        _entries.clear()
