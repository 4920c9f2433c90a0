"""A predict request as both protocols hand it over: checked, made one job for the model's
micro-batcher, scored, logged and counted.

``POST /v1/models/{model}/predict`` (``mlsteward.serving.app``) and the Open Inference
Protocol's ``POST /v2/models/{model}/infer`` (``mlsteward.serving.oip``) each turn their body
into a :class:`PredictRequest` and go on through the functions here: the request's rules, the
contract checks of its rows, routing, scoring, the prediction log and the metrics are written
once, so the two protocols cannot answer or record the same rows differently. Only reading
the body and writing the answer are each protocol's own.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlsteward.serving.batcher import Job, JobResult
from mlsteward.serving.features import (
    FieldError,
    RequestRejected,
    check_attributes,
    check_instances,
    logged_attributes,
    split_attributes,
)
from mlsteward.serving.routing import CHALLENGER_ARM
from mlsteward.serving.slots import ModelSlot

if TYPE_CHECKING:
    from mlsteward.serving.app import Service

MIXED_ARMS = "mixed"


class PredictRequest(BaseModel):
    """Either ``entity_ids`` or ``instances``, not both."""

    model_config = ConfigDict(extra="forbid")

    entity_ids: list[int | str] | None = Field(
        default=None, min_length=1, description="Ids whose features are read from Feast online."
    )
    instances: list[dict[str, Any]] | None = Field(
        default=None, min_length=1, description="Feature values, one object per row."
    )
    routing_keys: list[str] | None = Field(
        default=None,
        description="Per instance, what canary routing hashes (e.g. a user id); default: the "
        "entity id, or the values themselves.",
    )
    explain: bool = Field(default=False, description="Add the top-k SHAP contributions.")
    top_k: int | None = Field(default=None, ge=1, le=50)
    attributes: list[dict[str, Any]] | None = Field(
        default=None,
        min_length=1,
        description="With entity_ids, one object per id: the model's sensitive columns that "
        "are not features, written to the prediction log for monitoring and never given to "
        "the model (with instances, give them in each instance).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> PredictRequest:
        if (self.entity_ids is None) == (self.instances is None):
            raise ValueError("give either entity_ids or instances")
        if self.attributes is not None and (
            self.entity_ids is None or len(self.attributes) != len(self.entity_ids)
        ):
            raise ValueError(
                "attributes needs one object per entity id (with instances, give the sensitive "
                "columns in each instance)"
            )
        if self.routing_keys is not None and (
            self.instances is None or len(self.routing_keys) != len(self.instances)
        ):
            raise ValueError("routing_keys needs one key per instance")
        return self


def make_job(
    slot: ModelSlot, body: PredictRequest, explain_query: bool, version: str | None = None
) -> Job:
    """The request's job, its rows checked by the model's contract; ``version`` pins every row
    to that served version instead of routing it.

    Raises:
        RequestRejected: too many rows (413), no online store (503), rows that break the
            contract (422), in ``/v1``'s locations (``body``, ``entity_ids``, row, field).
    """
    cfg = slot.cfg
    rows = len(body.entity_ids or body.instances or [])
    if rows > cfg.serving.max_batch_rows:
        raise RequestRejected(
            413,
            [FieldError(("body",), f"{rows} rows exceed the limit of {cfg.serving.max_batch_rows}"
                        " per request (serving.max_batch_rows)", "too_many_rows")],
        )  # fmt: skip
    explain = body.explain or explain_query
    top_k = body.top_k or cfg.serving.top_k or cfg.scoring.top_k or 3
    future = asyncio.get_running_loop().create_future()
    if body.entity_ids is not None:
        online = slot.online
        if online is None:
            reason = slot.errors.get("online", "no online store")
            raise RequestRejected(503, [FieldError(("body", "entity_ids"), reason, "unavailable")])
        ids = [
            online.entity_key(v, ("body", "entity_ids", n)) for n, v in enumerate(body.entity_ids)
        ]
        given = body.attributes
        if given is None:
            return Job(ids, None, None, explain, top_k, future, version=version)
        errors = check_attributes(slot.attribute_rules, given)
        if errors:
            raise RequestRejected(422, errors)
        logged = [logged_attributes(slot.attribute_rules, row) for row in given]
        return Job(ids, None, None, explain, top_k, future, logged, version=version)
    instances = body.instances or []
    rules = slot.attribute_rules  # worked out once per model; empty for most
    errors = check_instances(slot.arms.rules, instances, rules)
    if errors:
        raise RequestRejected(422, errors)
    if not rules:
        return Job(None, instances, body.routing_keys, explain, top_k, future, version=version)
    # routed and scored on the features alone; the sensitive columns are logged beside them
    features, attributes = split_attributes(rules, instances)
    return Job(
        None, features, body.routing_keys, explain, top_k, future, attributes, version=version
    )


async def score(service: Service, model: str, job: Job) -> JobResult:
    """The job scored by the model's micro-batcher and its rows queued for the prediction log
    (after the challenger's injected delay, when the operator asked for one).

    Raises:
        RequestRejected: what the batcher refused (unknown entity, missing online values, no
            champion, a version not served, scoring failed).
    """
    result = await service.batchers[model].submit(job)
    faults = service.settings.faults.get(CHALLENGER_ARM)
    if faults and faults.delay_ms and CHALLENGER_ARM in result.arms:
        await asyncio.sleep(faults.delay_ms / 1000)
    await service.writer.put(model, result.log_rows)
    return result


def count_refused(service: Service, model: str, status: int) -> None:
    """A request refused before any arm answered it (``model`` empty when it is not served:
    a scan of random paths must not grow the metrics)."""
    metrics = service.metrics
    metrics.child(metrics.requests, model, "", "", str(status)).inc()


def count_answer(service: Service, model: str, arms: dict[str, str], elapsed: float) -> None:
    """Requests per arm and version; latency only where one arm answered the whole batch."""
    metrics = service.metrics
    for arm, version in arms.items():
        metrics.child(metrics.requests, model, version, arm, "200").inc()
    if len(arms) == 1:
        [(arm, version)] = arms.items()
        metrics.child(metrics.latency, model, version, arm).observe(elapsed)
    else:  # a batch answered by both arms says nothing about either one's latency
        metrics.child(metrics.latency, model, "", MIXED_ARMS).observe(elapsed)
