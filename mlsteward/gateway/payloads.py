"""What a signed delivery asks for: its id, its signed time, and the runs it should start.

Two forms are understood. A GitHub ``push`` (header ``X-GitHub-Event: push``) trains the models
whose config changed, or all of them when shared code changed; a plain JSON trigger
``{"action": "train" | "drift" | "score", "model": …, "parameters": {…}, "timestamp": …}``
starts one deployment run. Everything here is pure: the app turns ``Refusal`` into a status
code and an audit record.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any

from mlsteward.config.names import check_model_name
from mlsteward.errors import ConfigError

ACTIONS: dict[str, str] = {"train": "train-model", "drift": "drift-model", "score": "score-model"}
"""Action -> the Prefect flow its deployments belong to (see prefect.yaml)."""

PLAIN_EVENT = "trigger"
GITHUB_EVENTS = ("push", "ping")
DELIVERY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
PLAIN_KEYS = {"action", "model", "parameters", "timestamp", "delivery"}
DOC_SUFFIXES = (".md", ".rst", ".adoc")  # not .txt: requirements.txt is code
DOC_DIRS = ("docs/", "doc/")
DOC_NAMES = ("LICENSE", "NOTICE", "AUTHORS", "CHANGELOG")
MODEL_CONFIG_RE = re.compile(r"config/models/([^/]+)\.ya?ml")
ZERO_SHA = "0" * 40
COMMIT_RE = re.compile(r"[0-9a-f]{40}")


class Refusal(Exception):
    """A delivery the gateway will not act on, with the HTTP status that says why."""

    def __init__(self, status: int, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.details = details


class Unauthenticated(Refusal):
    """A refusal before the request is known to be a fresh one signed with the secret (too
    large, unreadable, unsigned, badly signed, or signed too long ago): anyone can send those,
    so the gateway counts them by ``kind`` instead of recording each (see ``refusals``)."""

    def __init__(self, status: int, reason: str, kind: str, **details: Any) -> None:
        super().__init__(status, reason, **details)
        self.kind = kind


@dataclass(frozen=True)
class RunRequest:
    """One deployment run a delivery asks for; ``parameters`` excludes ``model``."""

    action: str
    model: str
    parameters: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    """For flows with a ``reason`` parameter (training), unless ``parameters`` sets one."""
    git_ref: str | None = None
    """The commit the run is for: a tag on the run, and the ``git_ref`` parameter of flows
    that take one (training refuses to train another checkout), unless ``parameters`` sets
    one."""

    @property
    def deployment(self) -> str:
        return deployment_name(self.action, self.model)


@dataclass(frozen=True)
class Plan:
    """What an accepted delivery does: the runs to start, or why there are none."""

    runs: list[RunRequest]
    note: str
    details: dict[str, Any] = field(default_factory=dict)


def deployment_name(action: str, model: str) -> str:
    """``train-model/train-heart-disease``: the naming prefect.yaml uses for every model."""
    return f"{ACTIONS[action]}/{action}-{model.replace('_', '-')}"


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refusal(400, f"the body is not JSON: {exc}") from exc
    except RecursionError:  # within the size limit, '[' repeated nests deeper than Python goes
        raise Refusal(400, "the body is not JSON a trigger can be: nested too deeply") from None
    if not isinstance(payload, dict):
        raise Refusal(400, f"the body must be a JSON object, not {type(payload).__name__}")
    return payload


def event_of(github_event: str | None) -> str:
    """The delivery's event: GitHub's header, or the plain trigger form without one."""
    if github_event is None:
        return PLAIN_EVENT
    if github_event not in GITHUB_EVENTS:
        raise Refusal(
            422,
            f"unknown event {github_event!r}: the gateway acts on GitHub "
            f"{' and '.join(GITHUB_EVENTS)} events and on plain JSON triggers",
        )
    return github_event


def delivery_id(header: str | None, payload: dict[str, Any], event: str) -> str:
    """The id a delivery is accepted once under.

    A plain trigger may also carry it as ``delivery`` inside the signed body (``mlsteward
    trigger`` does); then the header, which the signature does not cover, must agree.
    """
    signed = payload.get("delivery") if event == PLAIN_EVENT else None
    if signed is not None and not isinstance(signed, str):
        raise Refusal(400, "'delivery' must be a string")
    if header is not None and signed is not None and header != signed:
        raise Refusal(401, "the delivery id header does not match the signed body's 'delivery'")
    value = header if header is not None else signed
    if value is None:
        raise Refusal(
            400, "no delivery id: send X-Mlsteward-Delivery (or X-GitHub-Delivery) with the request"
        )
    if not DELIVERY_RE.fullmatch(value):
        raise Refusal(400, "a delivery id is 1-128 letters, digits, '.', '_', ':' or '-'")
    return value


def parse_time(value: Any) -> dt.datetime:
    """Epoch seconds or ISO 8601 (a time without offset is read as UTC)."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        except ValueError:
            parsed = dt.datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise ValueError(f"expected epoch seconds or ISO 8601 text, got {type(value).__name__}")


def signed_time(payload: dict[str, Any], event: str) -> dt.datetime:
    """The time the sender signed into the body (a push: ``repository.pushed_at``)."""
    if event == "push":
        repository = payload.get("repository")
        raw = repository.get("pushed_at") if isinstance(repository, dict) else None
        where = "repository.pushed_at"
    else:
        raw, where = payload.get("timestamp"), "timestamp"
    if raw is None:
        raise Refusal(400, f"no signed timestamp: the body has no {where}")
    try:
        return parse_time(raw)
    except (ValueError, OverflowError, OSError) as exc:
        raise Refusal(400, f"{where} is not a time: {exc}") from exc


def check_fresh(signed: dt.datetime, now: dt.datetime, max_age_seconds: float) -> None:
    """Refuse a signed time outside ``now ± max_age``: an old capture replayed, or a clock
    far ahead (which would otherwise keep a request replayable for longer). A captured request
    can be replayed by anyone, so this refusal is ``Unauthenticated``."""
    age = (now - signed).total_seconds()
    if age > max_age_seconds:
        raise Unauthenticated(
            409,
            f"stale delivery: signed {age:.0f} s ago, more than {max_age_seconds:g} s",
            "stale_timestamp",
            signed_at=signed.isoformat(),
        )
    if -age > max_age_seconds:
        raise Unauthenticated(
            409,
            f"signed timestamp is {-age:.0f} s in the future, more than {max_age_seconds:g} s",
            "future_timestamp",
            signed_at=signed.isoformat(),
        )


def check_model(model: Any, known: list[str]) -> str:
    """``model`` itself, if it is a model name (the one rule, never a path) with a config.

    Raises:
        Refusal: 422 naming the rule or listing the known models.
    """
    try:
        check_model_name(model)
    except ConfigError as exc:
        raise Refusal(422, f"model: {exc}", known=known) from None
    if model not in known:
        raise Refusal(
            422, f"unknown model {model!r} (known: {', '.join(known) or 'none'})", known=known
        )
    return model


def plan_trigger(payload: dict[str, Any], known: list[str], delivery: str) -> Plan:
    """The plain JSON form: one run of one model's deployment."""
    extra = sorted(set(payload) - PLAIN_KEYS)
    if extra:
        raise Refusal(
            422,
            f"unknown field(s) {', '.join(extra)}; a trigger has {', '.join(sorted(PLAIN_KEYS))}",
        )
    action = payload.get("action")
    if not isinstance(action, str) or action not in ACTIONS:  # a list or object is no action
        raise Refusal(422, f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    model = check_model(payload.get("model"), known)
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise Refusal(422, "'parameters' must be a JSON object")
    if "model" in parameters:
        raise Refusal(422, "give the model as the trigger's 'model', not as a parameter")
    git_ref = parameters.get("git_ref") if isinstance(parameters.get("git_ref"), str) else None
    request = RunRequest(
        action, model, dict(parameters), reason=f"webhook: {delivery}", git_ref=git_ref
    )
    details = {"git_ref": git_ref} if git_ref else {}
    return Plan(runs=[request], note=f"{action} {model}", details=details)


def changed_files(payload: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(added or modified, removed) paths over every commit of a push.

    Raises:
        Refusal: 422 naming the field when ``commits`` is not a list of objects or a commit's
            file list is not a list of paths: read loosely, a string's letters or a mapping's
            keys would be taken for changed files, or nothing at all for every model.
    """
    touched: set[str] = set()
    removed: set[str] = set()
    commits = payload.get("commits")
    if commits is None:
        return touched, removed
    if not isinstance(commits, list) or not all(isinstance(c, dict) for c in commits):
        raise Refusal(422, "'commits' must be a list of commit objects")
    for n, commit in enumerate(commits):
        for key, bucket in (("added", touched), ("modified", touched), ("removed", removed)):
            paths = commit.get(key)
            if paths is None:
                continue
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise Refusal(422, f"commits[{n}].{key} must be a list of paths")
            bucket.update(paths)
    return touched, removed


def is_doc(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return (
        path.lower().endswith(DOC_SUFFIXES)
        or path.startswith(DOC_DIRS)
        or name.split(".", 1)[0] in DOC_NAMES
    )


def models_to_train(
    touched: set[str], removed: set[str], known: list[str]
) -> tuple[list[str], str]:
    """Which models a set of changed paths retrains, and why (no models: why none).

    A model whose ``config/models/<model>.yaml`` was added or modified; every model when
    anything else but documentation changed (shared code, the lock file, removed files) or no
    file list is known; none when only documentation (or only removed model configs) changed.
    The gateway applies it to a push; the example CI workflow to ``git diff --name-only``.

    Raises:
        Refusal: 422 for a model config the gateway does not know.
    """
    configs = {m.group(1) for p in touched if (m := MODEL_CONFIG_RE.fullmatch(p))}
    unknown = sorted(configs - set(known))
    if unknown:
        raise Refusal(
            422,
            f"unknown model(s) {', '.join(unknown)} in the changed configs "
            f"(known: {', '.join(known) or 'none'})",
            known=known,
        )
    shared = sorted(
        p for p in touched | removed if not MODEL_CONFIG_RE.fullmatch(p) and not is_doc(p)
    )
    if not touched and not removed:
        return list(known), "no list of changed files"
    if shared:
        more = ", …" if len(shared) > 5 else ""
        return list(known), f"shared files changed ({', '.join(shared[:5])}{more})"
    if configs:
        return sorted(configs), "model config changed"
    if any(MODEL_CONFIG_RE.fullmatch(p) for p in removed):
        return [], "only removed model configs: nothing to train"
    return [], "only documentation changed: nothing to train"


def plan_push(payload: dict[str, Any], known: list[str], branches: list[str]) -> Plan:
    """A GitHub push to a configured branch: train what ``models_to_train`` says, each run at
    the pushed commit (``after``) as its ``git_ref``, so a version's lineage is the code that
    was pushed, never whatever the worker's checkout holds by then.

    Raises:
        Refusal: 422 for an unknown model config, or runs to start without a commit sha.
    """
    ref = payload.get("ref")
    if not isinstance(ref, str):
        raise Refusal(422, "a push event needs 'ref'")
    repo = (payload.get("repository") or {}).get("full_name") or "repository"
    pushed = payload.get("after")
    after: str = pushed if isinstance(pushed, str) else ""
    info = {"ref": ref, "repository": repo, "after": after}
    if not ref.startswith("refs/heads/"):
        return Plan([], f"{ref} is not a branch; only branch pushes train", info)
    branch = ref.removeprefix("refs/heads/")
    if branch not in branches:
        return Plan(
            [], f"branch {branch!r} is not configured (configured: {', '.join(branches)})", info
        )
    if payload.get("deleted") or after == ZERO_SHA:
        return Plan([], f"branch {branch!r} was deleted", info)

    try:
        touched, removed = changed_files(payload)
        models, why = models_to_train(touched, removed, known)
    except Refusal as refusal:
        refusal.details.update(info)
        raise
    if not models:
        return Plan([], why, info)
    if not COMMIT_RE.fullmatch(after):
        raise Refusal(
            422,
            f"'after' must be the pushed commit (40 lower-case hex digits) to train "
            f"{', '.join(models)} at it, got {after[:64]!r}",
            **info,
        )
    info["git_ref"] = after
    reason = f"ci: {repo}@{after[:12]}"
    runs = [RunRequest("train", m, reason=reason, git_ref=after) for m in models]
    return Plan(runs, f"train {', '.join(models)} at {after[:12]}: {why}", info)
