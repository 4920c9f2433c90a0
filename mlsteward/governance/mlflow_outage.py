"""When MLflow's tracking server goes away: the one repeat MLflow's client does not make, and
one error of our own naming the server.

MLflow's client retries a request the server refused or reset before answering (7 times over
about four minutes, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``), so a server restarted within that
rides through. It does not retry a request whose answer was cut off: a server killed while it
answered leaves ``Connection broken: IncompleteRead`` at once, and a training run failed on one
trial's log line that way (tests/faults/test_mlflow_faults.py). So:

- every ``MlflowClient`` call goes through :class:`ResilientClient`: a call that may be made
  twice (a read, a tag, an alias, an artifact upload, ending a run) and whose answer was cut
  off is made once more, which then meets MLflow's own retries while the server restarts.
  Creating a run or a version is never repeated blindly: a cut-off one may have been made, so
  its callers look for it first (``mlflow_adapter``);
- what is left (the server still away after the client's retries) is raised as
  :class:`TrackingServerUnavailable`: one line naming the server (a ``MlstewardError``, so the
  CLI prints it and Prefect logs it without a traceback) that is also an ``MlflowException``,
  so code that handles MLflow's failures still does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from mlsteward.config.settings import mlflow_tracking_uri
from mlsteward.errors import MlstewardError

log = logging.getLogger("mlsteward.governance")
T = TypeVar("T")

NOT_REPEATED = frozenset({"create_run", "create_model_version"})
"""Client calls that make something new: a cut-off one may have made it."""

# What requests and urllib3 say, as MLflow passes it on in its messages: MLflow wraps the
# original exception in an MlflowException of its own text, or lists it among a download's
# failures, so the words are what is left to read.
_CUT_OFF = ("IncompleteRead", "Connection broken", "RemoteDisconnected", "Connection aborted")
_REFUSED = ("Connection refused", "NewConnectionError", "Failed to establish a new connection")
_TIMED_OUT = ("timed out", "Timeout")
_GAVE_UP = ("Max retries exceeded",)


class TrackingServerUnavailable(MlstewardError, MlflowException):
    """MLflow's tracking server did not answer: refused, cut off or timed out after the
    client's own retries. An outage, not an answer: nothing was decided from it, and the same
    call succeeds once the server is back. ``cut_off``: the server went away while answering,
    so a call that creates something may have created it."""

    def __init__(self, message: str, *, cut_off: bool = False) -> None:
        MlflowException.__init__(self, message, error_code=TEMPORARILY_UNAVAILABLE)
        self.cut_off = cut_off


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _from_the_wire(exc: BaseException) -> bool:
    """Raised by the HTTP client (or MLflow passing its error on), never an answer the server
    gave: a missing version or a refused write reads as the server's own message."""
    for e in _chain(exc):
        module = type(e).__module__
        if module.startswith(("requests", "urllib3", "http.client")):
            return True
        text = str(e)
        if text.startswith("API request to ") and " failed with exception " in text:
            return True
        if "failures occurred while downloading" in text:
            return True
    return False


def connection_failure(exc: BaseException) -> str | None:
    """Why MLflow's client could not talk to its server, when that is what ``exc`` is."""
    if isinstance(exc, TrackingServerUnavailable):
        return str(exc)
    if not _from_the_wire(exc):
        return None
    text = " ".join(str(e) for e in _chain(exc))
    if any(m in text for m in _CUT_OFF):
        return "it went away while answering"
    if any(m in text for m in _REFUSED):
        return "connection refused"
    if any(m in text for m in _TIMED_OUT):
        return "timed out"
    if any(m in text for m in _GAVE_UP):
        return "no usable answer"
    return None


def cut_off(exc: BaseException) -> bool:
    """The server went away in the middle of its answer (MLflow's client does not retry it)."""
    if isinstance(exc, TrackingServerUnavailable):
        return exc.cut_off
    return connection_failure(exc) == "it went away while answering"


def unavailable(exc: BaseException, what: str) -> TrackingServerUnavailable:
    """``exc`` as the one error the user reads; ``what`` names the call that failed."""
    if isinstance(exc, TrackingServerUnavailable):
        return exc
    why = connection_failure(exc) or str(exc)
    return TrackingServerUnavailable(
        f"the MLflow tracking server at {mlflow_tracking_uri()} is unavailable ({why}; "
        f"{what} failed after the client's retries)",
        cut_off=cut_off(exc),
    )


def call(what: str, fn: Callable[[], T], *, repeat: bool = True) -> T:
    """``fn()``; made once more when its answer was cut off (``repeat``: it may be made
    twice); a connection failure left over is raised as :class:`TrackingServerUnavailable`."""
    try:
        return fn()
    except Exception as exc:
        if connection_failure(exc) is None:
            raise
        if not (repeat and cut_off(exc)):
            raise unavailable(exc, what) from exc
        log.warning("the MLflow tracking server went away while answering %s; asking again", what)
    try:
        return fn()
    except Exception as exc:
        if connection_failure(exc) is None:
            raise
        raise unavailable(exc, what) from exc


class ResilientClient:
    """An ``MlflowClient`` whose calls go through :func:`call` (attributes pass through)."""

    def __init__(self, inner: MlflowClient) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr
        repeat = name not in NOT_REPEATED

        def method(*args: Any, **kwargs: Any) -> Any:
            return call(name, lambda: attr(*args, **kwargs), repeat=repeat)

        method.__name__ = name
        method.__doc__ = attr.__doc__
        return method
