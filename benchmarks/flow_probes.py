"""Timers for ``training_overhead.py``: around our functions, and inside Prefect's flow engine,
its API client and its result store, so the time a flow spends outside its tasks has names.

Why probes instead of a profiler: a profiler slows every Python call, which is most of what the
orchestration does, so it would inflate exactly the overhead being measured. A timer around a
call costs microseconds and changes nothing else. Every probe wraps the very object the caller
looks up at call time (a module global, a class attribute), so nothing is skipped or rerouted.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import re
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Our packages: a function imported by name lives in several of their namespaces.
OWN_PACKAGES = ("mlsteward", "tasks", "flows")

# What the flow engine does around the flow's body, timed where it happens. A context manager's
# set-up and tear-down are timed apart (keys "<label>: enter" / "<label>: exit").
ENGINE_CALLS: list[tuple[str, str]] = [
    ("create_flow_run", "create flow run (API)"),
    ("begin_run", "begin run: validate parameters, set Running (API)"),
    ("handle_success", "handle_success: result record, set Completed (API)"),
]
ENGINE_CONTEXTS: list[tuple[str, str]] = [
    ("initialize_run", "client context"),
    ("setup_run_context", "run context"),
]
HEARTBEATS = "heartbeat thread"
ENGINE_PREFIX = "engine: "

API_PREFIX = "prefect api: "
MLFLOW_PREFIX = "mlflow client: "
RESULTS = "prefect result persistence"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Stopwatch:
    """Seconds and call counts per key, the threads each key ran on, the last value of the keys
    asked to keep one, and named points in time; reset before each measured run."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    threads: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    kept: dict[str, Any] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)

    def reset(self) -> None:
        for store in (self.seconds, self.calls, self.threads, self.kept, self.marks):
            store.clear()

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] += seconds
        self.calls[key] += 1
        self.threads[key].add(threading.get_ident())

    def mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()

    def wrap(
        self,
        key: str | Callable[..., str],
        fn: Callable[..., Any],
        keep: bool = False,
        marks: tuple[str, str] | None = None,
    ) -> Callable[..., Any]:
        """``fn`` timed under ``key`` (or the key ``key(*args)`` names); ``keep`` stores its
        return value, ``marks`` names the points where it starts and ends."""
        name_of = key if callable(key) else (lambda *_a, **_k: key)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self.add(name_of(*args, **kwargs), time.perf_counter() - start)

            return timed_async

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if marks:
                self.mark(marks[0])
            start = time.perf_counter()
            try:
                value = fn(*args, **kwargs)
                if keep:
                    self.kept[name_of(*args, **kwargs)] = value
                return value
            finally:
                self.add(name_of(*args, **kwargs), time.perf_counter() - start)
                if marks:
                    self.mark(marks[1])

        return timed

    def wrap_context(self, label: str, cm_fn: Callable[..., Any]) -> Callable[..., Any]:
        """A context-manager function whose set-up and tear-down are timed apart."""

        @functools.wraps(cm_fn)
        @contextlib.contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            start = time.perf_counter()
            cm = cm_fn(*args, **kwargs)
            value = cm.__enter__()
            self.add(f"{label}: enter", time.perf_counter() - start)
            try:
                yield value
            except BaseException:
                start = time.perf_counter()
                try:
                    if not cm.__exit__(*sys.exc_info()):
                        raise
                finally:
                    self.add(f"{label}: exit", time.perf_counter() - start)
            else:
                start = time.perf_counter()
                cm.__exit__(None, None, None)
                self.add(f"{label}: exit", time.perf_counter() - start)

        return timed


def patch_everywhere(module_name: str, attr: str, wrapper: Callable[..., Any]) -> None:
    """Replace ``module.attr`` and every name bound to the same object in our loaded modules
    (``from x import f`` copies the reference, so patching ``x`` alone would miss callers)."""
    module = importlib.import_module(module_name)
    original = getattr(module, attr)
    setattr(module, attr, wrapper)
    for name, loaded in list(sys.modules.items()):
        if loaded is None or name.split(".")[0] not in OWN_PACKAGES:
            continue
        for key, value in list(vars(loaded).items()):
            if value is original:
                setattr(loaded, key, wrapper)


def api_call_key(request: Any, kind: str) -> str:
    """``prefect api: POST /flow_runs/{id}/set_state (sync)``: one key per endpoint."""
    path = request.url.path
    path = path.split("/api/", 1)[1] if "/api/" in path else path.lstrip("/")
    return f"{API_PREFIX}{request.method} /{_UUID.sub('{id}', path)} ({kind})"


def instrument_prefect(watch: Stopwatch) -> None:
    """Time the flow engine's steps around the body, every Prefect API request and every
    result the engine persists."""
    from prefect import flow_engine
    from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient
    from prefect.results import ResultStore

    engine = flow_engine.FlowRunEngine
    for attr, label in ENGINE_CALLS:
        setattr(engine, attr, watch.wrap(ENGINE_PREFIX + label, getattr(engine, attr)))
    for attr, label in ENGINE_CONTEXTS:
        setattr(engine, attr, watch.wrap_context(ENGINE_PREFIX + label, getattr(engine, attr)))
    flow_engine._send_heartbeats = watch.wrap_context(
        ENGINE_PREFIX + HEARTBEATS, flow_engine._send_heartbeats
    )

    sync_send = PrefectHttpxSyncClient.send
    async_send = PrefectHttpxAsyncClient.send
    PrefectHttpxSyncClient.send = watch.wrap(  # type: ignore[method-assign]
        lambda _client, request, *a, **k: api_call_key(request, "sync"), sync_send
    )
    PrefectHttpxAsyncClient.send = watch.wrap(  # type: ignore[method-assign]
        lambda _client, request, *a, **k: api_call_key(request, "async"), async_send
    )
    for attr in ("_persist_result_record", "_apersist_result_record"):
        if hasattr(ResultStore, attr):
            setattr(ResultStore, attr, watch.wrap(RESULTS, getattr(ResultStore, attr)))


def instrument_mlflow(watch: Stopwatch) -> None:
    """Time every public ``MlflowClient`` method, so a stage's MLflow round trips can be
    counted by kind (one method may call another: their times then nest)."""
    from mlflow.tracking import MlflowClient

    for name, fn in list(vars(MlflowClient).items()):
        if not name.startswith("_") and inspect.isfunction(fn):
            setattr(MlflowClient, name, watch.wrap(MLFLOW_PREFIX + name, fn))
