"""Handing a prepared training set to a subflow in the same process, by key.

Why: a subflow's parameters are JSON-encoded into its flow-run record; a training frame would
be encoded value by value. Subflows are called from a flow run in the same process, so a key
is enough.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from mlsteward.errors import MlstewardError
from mlsteward.training.prepared import PreparedData

_STAGED: dict[str, PreparedData] = {}


@contextlib.contextmanager
def handed_over(data: PreparedData) -> Iterator[str]:
    """A key under which a subflow in this process finds ``data`` while the block runs."""
    key = uuid.uuid4().hex
    _STAGED[key] = data
    try:
        yield key
    finally:
        _STAGED.pop(key, None)


def handed_over_data(key: str) -> PreparedData:
    try:
        return _STAGED[key]
    except KeyError:
        raise MlstewardError(
            f"no training data handed over under {key!r}: the tuning subflow runs only when "
            "called from the training flow"
        ) from None
