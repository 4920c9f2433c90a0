"""Micro-batching: the requests that arrive while one batch is scored are scored together.

One task per model takes every queued job (up to ``micro_batch_rows`` rows), does one Feast
online lookup for all their entity ids, routes each row to an arm, and makes one
``inplace_predict`` and, for rows that asked for explanations, one ``pred_contribs`` call per
arm. Under load that turns hundreds of small XGBoost and SQLite calls into a few large ones
(exact SHAP on the demo model, ~400 trees of depth 6: 0.93 ms for one row alone, 0.49 ms a row
in batches of 32; a Feast lookup costs about the same for one id as for thirty); alone, a
request is scored at once, with no waiting for company. The work runs on the event loop
itself: handing it to a thread pool added 70-190 ms tails in measurements, more than the
loop is ever blocked by one batch.

A challenger row that fails to score is counted against the challenger and answered by the
champion, so a broken canary costs its users nothing but shows in the error-rate guardrail.

A classifier answers a probability, its label and the threshold between them, and logs
``prediction_proba`` (the probability) and ``prediction`` (the label); a regression model
answers and logs the predicted value as a float ``prediction`` and nothing else. Which one a
row gets is the answering version's precomputed ``regression`` flag, read once per row.
Sensitive columns that are not features, when a request gives them, go to the log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from mlsteward.features.online import OnlineStoreUnavailable
from mlsteward.serving.features import (
    FieldError,
    RequestRejected,
    missing_online,
)
from mlsteward.serving.routing import CHALLENGER_ARM, CHAMPION_ARM, bucket, choose_arm, routing_key
from mlsteward.serving.scorer import Explanation, ServedModel, top_contributions
from mlsteward.serving.settings import ArmFaults
from mlsteward.serving.slots import Arms, ModelSlot

log = logging.getLogger("mlsteward.serving")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class InjectedFault(RuntimeError):
    """A failure the operator asked for (``MLSTEWARD_SERVING_FAULTS``), to rehearse rollbacks."""


def _request_ids() -> Iterator[str]:
    """Unique ids, cheaply: a random per-process prefix and a counter (``uuid4`` per request
    costs a system call for randomness, about 2% of a lone request's time)."""
    prefix = uuid.uuid4().hex[:16]
    return (f"{prefix}{n:016x}" for n in itertools.count())


_REQUEST_IDS = _request_ids()


@dataclass(eq=False)  # a job is itself: compared by identity, never field by field
class Job:
    """One predict request's rows, waiting to be scored."""

    entity_ids: list[Any] | None
    instances: list[dict[str, Any]] | None
    routing_keys: list[str] | None
    explain: bool
    top_k: int
    future: asyncio.Future[JobResult]
    # per row, the sensitive columns that are not features: logged, never scored
    attributes: list[dict[str, Any]] | None = None
    # a served version every row goes to instead of being routed (the champion's or, during a
    # canary, the challenger's); checked against the arms the batch is scored with
    version: str | None = None
    request_id: str = field(default_factory=lambda: next(_REQUEST_IDS))

    def __len__(self) -> int:
        return len(self.entity_ids if self.entity_ids is not None else self.instances or [])


@dataclass
class JobResult:
    predictions: list[dict[str, Any]]
    log_rows: list[dict[str, Any]]
    arms: dict[str, str]  # arm -> version that answered some row
    event_time: datetime


@dataclass
class _Row:
    job: int
    entity_id: Any
    features: dict[str, Any]
    key: str
    arm: str
    attributes: dict[str, Any] | None = None
    score: float = 0.0  # the probability of the positive label, or the predicted value
    contributions: np.ndarray | None = None
    base_value: float = 0.0


class MicroBatcher:
    def __init__(self, slot: ModelSlot, faults: dict[str, ArmFaults] | None = None) -> None:
        self.slot = slot
        self.faults = faults or {}
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._holding = False  # the batch task has taken a job it has not scored yet
        self._online_down = False  # the last lookup failed for want of the online store

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self.queue.empty():  # nothing should be queued after uvicorn drained requests
            job = self.queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RequestRejected(503, [_error("service is stopping")]))

    async def submit(self, job: Job) -> JobResult:
        if self._alone():
            self._score_batch([job])  # nothing could join it: no hand-off to the batch task
        else:
            await self.queue.put(job)
        return await job.future

    def _alone(self) -> bool:
        """Whether no other request can join this one's batch: none is queued or held by the
        batch task, and nothing else (such as another request's task) is ready to run in this
        turn of the event loop. Handing a lone request to the batch task costs two loop turns,
        ~5 % of a lone request's time. Reads asyncio's ready queue, where it has one (the
        service runs the asyncio loop); elsewhere every request takes the batch task."""
        if self._holding or not self.queue.empty():
            return False
        ready = getattr(asyncio.get_running_loop(), "_ready", None)
        return ready is not None and not ready

    async def _run(self) -> None:
        limit = self.slot.cfg.serving.micro_batch_rows
        while True:
            job = await self.queue.get()
            self._holding = True
            # One turn of the loop lets requests already read from their sockets join this
            # batch: at 32 concurrent explain requests this took throughput from ~600 to
            # ~800-900 req/s. (A lone request never gets here: ``submit`` scores it at once.)
            await asyncio.sleep(0)
            jobs, rows = [job], len(job)
            while rows < limit and not self.queue.empty():
                job = self.queue.get_nowait()
                jobs.append(job)
                rows += len(job)
            self._score_batch(jobs)
            self._holding = False

    def _score_batch(self, jobs: list[Job]) -> None:
        try:
            self.process(jobs)
        except Exception as exc:  # a bug here must not kill the loop for later requests
            log.exception("scoring a micro-batch failed")
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(exc)

    # -- one micro-batch ------------------------------------------------------------------------
    def process(self, jobs: list[Job]) -> None:
        arms = self.slot.arms
        metrics, model = self.slot.metrics, self.slot.cfg.name
        metrics.child(metrics.batch_rows, model).observe(sum(len(j) for j in jobs))
        if arms.champion is None:
            for j in jobs:
                _fail(j, RequestRejected(503, [_error(f"{model} has no champion to serve")]))
            return
        rows = self._features(jobs, arms)
        if not rows:
            return
        now = datetime.now(UTC)
        by_arm = {CHAMPION_ARM: [r for r in rows if r.arm == CHAMPION_ARM],
                  CHALLENGER_ARM: [r for r in rows if r.arm == CHALLENGER_ARM]}  # fmt: skip
        if by_arm[CHALLENGER_ARM]:
            assert arms.challenger is not None
            failed = self._score(arms.challenger, CHALLENGER_ARM, by_arm[CHALLENGER_ARM], jobs)
            for r in failed:
                r.arm = CHAMPION_ARM
            by_arm[CHAMPION_ARM].extend(failed)
        if by_arm[CHAMPION_ARM]:
            failed = self._score(arms.champion, CHAMPION_ARM, by_arm[CHAMPION_ARM], jobs)
            if failed:
                doomed = {r.job for r in failed}
                for i in doomed:
                    _fail(jobs[i], RequestRejected(503, [_error(f"{model}: scoring failed")]))
                rows = [r for r in rows if r.job not in doomed]
        self._answer(jobs, rows, arms, now)

    def _lookup_failed(self, exc: Exception) -> None:
        """An outage of the online store is logged once, when it begins, not with a traceback
        per micro-batch (hundreds a second under load); any other failure is a bug, logged
        with its traceback each time."""
        if not isinstance(exc, OnlineStoreUnavailable):
            log.exception("online feature lookup failed")
            return
        if not self._online_down:
            log.warning("%s: online feature lookups fail with 503 until it is back: %s",
                        self.slot.cfg.name, exc)  # fmt: skip
        self._online_down = True

    def _lookup_answered(self) -> None:
        if self._online_down:
            log.warning("%s: the online store answers again", self.slot.cfg.name)
            self._online_down = False

    def _features(self, jobs: list[Job], arms: Arms) -> list[_Row]:
        """Feature rows of every job still alive, routed; failed jobs are answered here."""
        cfg = self.slot.cfg
        out: list[_Row] = []
        fetched: list[dict[str, Any] | None] = []
        entity_jobs = [j for j in jobs if j.entity_ids is not None]
        if entity_jobs:
            online = self.slot.online
            ids = [i for j in entity_jobs for i in j.entity_ids or []]
            try:
                if online is None:
                    raise OnlineStoreUnavailable(self.slot.errors.get("online", "no online store"))
                fetched = online.fetch(ids)
            except Exception as exc:
                self._lookup_failed(exc)
                for j in entity_jobs:
                    _fail(j, RequestRejected(503, [_error(f"online features unavailable: {exc}")]))
                entity_jobs = []
            else:
                self._lookup_answered()
        canary = arms.canary
        rollout_id = canary.rollout_id if canary and arms.challenger else None
        fraction = arms.fraction
        pos = 0
        for index, job in enumerate(jobs):
            found: list[dict[str, Any] | None] = []
            if job.entity_ids is not None and job in entity_jobs:
                # taken before a job is skipped: the lookup holds rows for every entity job
                found = fetched[pos : pos + len(job)]
                pos += len(job)
            if job.future.done():
                continue
            pinned = None
            if job.version is not None:
                pinned = pinned_arm(arms, job.version)
                if pinned is None:
                    _fail(
                        job, RequestRejected(404, [unserved_version(cfg.name, job.version, arms)])
                    )
                    continue
            if job.entity_ids is not None:
                if job not in entity_jobs:
                    continue
                errors = [
                    _error(
                        f"unknown {cfg.source.entity} {i!r}: not in the online store",
                        ("body", "entity_ids", n),
                        "unknown_entity",
                    )
                    for n, (i, row) in enumerate(zip(job.entity_ids, found, strict=True))
                    if row is None
                ]
                if errors:
                    _fail(job, RequestRejected(404, errors))
                    continue
                errors = [
                    e
                    for n, row in enumerate(found)
                    for e in missing_online(arms.rules, row or {}, ("body", "entity_ids", n))
                ]
                if errors:
                    _fail(job, RequestRejected(422, errors))
                    continue
                pairs = [(i, row or {}) for i, row in zip(job.entity_ids, found, strict=True)]
            else:
                pairs = [(None, row) for row in job.instances or []]
            attributes = job.attributes
            for n, (entity_id, features) in enumerate(pairs):
                given = job.routing_keys[n] if job.routing_keys else None
                key = given if given is not None else routing_key(entity_id, features)
                arm = pinned or choose_arm(cfg.name, rollout_id, fraction, key)
                out.append(
                    _Row(
                        index, entity_id, features, key, arm, attributes[n] if attributes else None
                    )
                )
        return out

    def _score(
        self, served: ServedModel, arm: str, rows: list[_Row], jobs: list[Job]
    ) -> list[_Row]:
        """Score rows with one model; returns the rows it failed (all of them on an error)."""
        metrics, model = self.slot.metrics, self.slot.cfg.name
        faults = self.faults.get(arm)
        failed: list[_Row] = []
        if faults is not None and faults.error_rate > 0:
            failed = [r for r in rows if bucket(model, "fault", r.key) < faults.error_rate]
            rows = [r for r in rows if bucket(model, "fault", r.key) >= faults.error_rate]
        try:
            if rows:
                matrix = served.encode([r.features for r in rows])
                wanted = [n for n, r in enumerate(rows) if jobs[r.job].explain]
                started = time.perf_counter()
                exp: Explanation | None
                if len(wanted) == len(rows):
                    scores, exp = served.predict_explained(matrix)
                else:
                    scores = served.predict(matrix)
                    started = time.perf_counter()
                    exp = served.explain(matrix[wanted]) if wanted else None
                if exp is not None:
                    metrics.child(metrics.shap_seconds, model, arm).observe(
                        time.perf_counter() - started
                    )
                    for k, n in enumerate(wanted):
                        rows[n].contributions = exp.contributions[k]
                        rows[n].base_value = float(exp.base_values[k])
                for r, p in zip(rows, scores.tolist(), strict=True):
                    r.score = p
        except Exception:
            log.exception("%s %s v%s failed to score %d row(s)", model, arm, served.version,
                          len(rows))  # fmt: skip
            failed.extend(rows)
            rows = []
        if failed:
            metrics.child(metrics.arm_errors, model, served.version, arm).inc(len(failed))
        if rows:
            metrics.child(metrics.predictions, model, served.version, arm).inc(len(rows))
        return failed

    def _answer(self, jobs: list[Job], rows: list[_Row], arms: Arms, now: datetime) -> None:
        cfg = self.slot.cfg
        entity, ts_col = cfg.source.entity, cfg.timestamp_column
        per_job: dict[int, list[_Row]] = {}
        for r in rows:
            per_job.setdefault(r.job, []).append(r)
        stamp = now.isoformat()
        # Logged as microseconds since the epoch (the log writer types them as timestamps):
        # handing a second's rows to the writer process pickled 2,000 datetimes in ~1.5 ms
        # of held GIL; integers take a few microseconds.
        now_us = (now - EPOCH) // MICROSECOND
        for index, job_rows in per_job.items():
            job = jobs[index]
            if job.future.done():
                continue
            predictions, log_rows, served_by = [], [], {}
            for r in job_rows:
                model = arms.champion if r.arm == CHAMPION_ARM else arms.challenger
                assert model is not None
                served_by[r.arm] = model.version
                # The arm is logged, never answered: a caller who saw it could search for
                # inputs the canary answers (routing is a hash of the values).
                item: dict[str, Any]
                if model.regression:
                    item = {
                        "entity_id": r.entity_id,
                        "prediction": r.score,
                        "version": model.version,
                        "event_timestamp": stamp,
                    }
                    logged = {
                        entity: r.entity_id,
                        ts_col: now_us,
                        **r.features,
                        "prediction": r.score,
                        "model_version": model.version,
                        "arm": r.arm,
                        "request_id": job.request_id,
                        "scored_at": now_us,
                    }
                else:
                    label = model.label(r.score)
                    item = {
                        "entity_id": r.entity_id,
                        "probability": r.score,
                        "label": label,
                        "threshold": model.threshold,
                        "version": model.version,
                        "event_timestamp": stamp,
                    }
                    logged = {
                        entity: r.entity_id,
                        ts_col: now_us,
                        **r.features,
                        "prediction_proba": r.score,
                        "prediction": label,
                        "model_version": model.version,
                        "arm": r.arm,
                        "request_id": job.request_id,
                        "scored_at": now_us,
                    }
                if r.attributes:  # beside the row's own columns, which win a name clash
                    logged = {**r.attributes, **logged}
                if r.contributions is not None:
                    top = top_contributions(model.columns, r.contributions, job.top_k)
                    item["explanation"] = {
                        "base_value": r.base_value,
                        "contributions": [{"feature": f, "value": v} for f, v in top],
                    }
                    for rank, (f, v) in enumerate(top, start=1):
                        logged[f"shap_{rank}_feature"] = f
                        logged[f"shap_{rank}_value"] = v
                predictions.append(item)
                log_rows.append(logged)
            job.future.set_result(JobResult(predictions, log_rows, served_by, now))


def pinned_arm(arms: Arms, version: str) -> str | None:
    """The arm that serves ``version`` in ``arms``, or None when neither arm does."""
    if arms.champion is not None and arms.champion.version == version:
        return CHAMPION_ARM
    if arms.challenger is not None and arms.challenger.version == version:
        return CHALLENGER_ARM
    return None


def unserved_version(model: str, version: str, arms: Arms) -> FieldError:
    """A 404's reason for a version neither arm serves, naming the versions that are served."""
    served = [
        f"{m.version} ({arm})"
        for arm, m in ((CHAMPION_ARM, arms.champion), (CHALLENGER_ARM, arms.challenger))
        if m is not None
    ]
    msg = f"{model} version {version!r} is not served; served: {', '.join(served) or 'none'}"
    return FieldError(("path", "version"), msg, "unknown_version")


def _error(
    msg: str, loc: tuple[str | int, ...] = ("body",), kind: str = "unavailable"
) -> FieldError:
    return FieldError(loc, msg, kind)


def _fail(job: Job, exc: Exception) -> None:
    if not job.future.done():
        job.future.set_exception(exc)
