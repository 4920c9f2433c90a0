"""What a webhook delivery asks for: pure parsing and planning, no server."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import yaml

from mlsteward.gateway.limits import check_paths
from mlsteward.gateway.payloads import (
    Refusal,
    RunRequest,
    check_fresh,
    delivery_id,
    deployment_name,
    event_of,
    parse_body,
    parse_time,
    plan_push,
    plan_trigger,
    signed_time,
)
from mlsteward.gateway.runs import run_parameters, run_tags
from tasks.retrain import training_deployment_name
from tests.conftest import REPO_ROOT

KNOWN = ["churn", "heart_disease"]
NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def push(*files: str, ref: str = "refs/heads/main", removed: tuple[str, ...] = ()) -> dict:
    return {
        "ref": ref,
        "after": "a" * 40,
        "repository": {"full_name": "acme/mlsteward", "pushed_at": int(NOW.timestamp())},
        "commits": [{"added": [], "modified": list(files), "removed": list(removed)}],
    }


def models(plan: Any) -> list[str]:
    return [r.model for r in plan.runs]


def test_deployment_names_follow_prefect_yaml() -> None:
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    flows = {"train": "training_flow", "drift": "drift_flow", "score": "scoring_flow"}
    for action, flow_fn in flows.items():
        flow_name, dep = deployment_name(action, "heart_disease").split("/")
        [entry] = [d for d in spec["deployments"] if d["name"] == dep]
        path, fn = entry["entrypoint"].split(":")
        assert fn == flow_fn
        module = __import__(path.removesuffix(".py").replace("/", "."), fromlist=[fn])
        assert getattr(module, fn).name == flow_name
    assert deployment_name("train", "heart_disease") == training_deployment_name("heart_disease")


def test_a_model_config_change_trains_that_model() -> None:
    plan = plan_push(push("config/models/churn.yaml", "README.md"), KNOWN, ["main"])
    assert models(plan) == ["churn"]
    assert plan.runs[0].action == "train"
    assert plan.runs[0].reason == f"ci: acme/mlsteward@{'a' * 12}"


def test_a_shared_code_change_trains_every_model() -> None:
    plan = plan_push(push("config/models/churn.yaml", "mlsteward/training.py"), KNOWN, ["main"])
    assert models(plan) == KNOWN and "mlsteward/training.py" in plan.note
    assert models(plan_push(push(removed=("tasks/old.py",)), KNOWN, ["main"])) == KNOWN
    assert models(plan_push(push(), KNOWN, ["main"])) == KNOWN  # no file list: be safe
    assert models(plan_push(push("requirements.txt"), KNOWN, ["main"])) == KNOWN


def test_documentation_only_and_other_branches_start_nothing() -> None:
    docs = plan_push(push("README.md", "docs/a.txt", "LICENSE"), KNOWN, ["main"])
    assert docs.runs == [] and "documentation" in docs.note
    other = plan_push(push("mlsteward/x.py", ref="refs/heads/dev"), KNOWN, ["main", "release"])
    assert other.runs == [] and "'dev'" in other.note
    tag = plan_push(push("mlsteward/x.py", ref="refs/tags/v1"), KNOWN, ["main"])
    assert tag.runs == [] and "not a branch" in tag.note
    assert models(plan_push(push("x.py", ref="refs/heads/release"), KNOWN, ["main", "release"]))


def test_an_unknown_model_config_is_refused_naming_it() -> None:
    with pytest.raises(Refusal) as info:
        plan_push(push("config/models/fraud.yaml"), KNOWN, ["main"])
    assert info.value.status == 422
    assert "fraud" in info.value.reason and "heart_disease" in info.value.reason


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"action": "explode", "model": "churn"}, "unknown action 'explode'"),
        ({"action": "train", "model": "fraud"}, "unknown model 'fraud'"),
        ({"action": "train", "model": "churn", "extra": 1}, "unknown field(s) extra"),
        ({"action": "train", "model": "churn", "parameters": [1]}, "must be a JSON object"),
        ({"action": "train", "model": "churn", "parameters": {"model": "x"}}, "not as a param"),
    ],
)
def test_plain_triggers_are_checked(payload: dict, needle: str) -> None:
    with pytest.raises(Refusal) as info:
        plan_trigger(payload, KNOWN, "d-1")
    assert info.value.status == 422 and needle in info.value.reason


def test_a_plain_trigger_is_one_run_with_its_parameters() -> None:
    plan = plan_trigger(
        {"action": "score", "model": "churn", "parameters": {"source": "x"}}, KNOWN, "d-1"
    )
    [run] = plan.runs
    assert (run.action, run.model, run.parameters) == ("score", "churn", {"source": "x"})
    assert run.deployment == "score-model/score-churn" and run.reason == "webhook: d-1"


def test_events_and_delivery_ids() -> None:
    assert event_of(None) == "trigger" and event_of("push") == "push"
    with pytest.raises(Refusal) as info:
        event_of("pull_request")
    assert info.value.status == 422 and "pull_request" in info.value.reason
    assert delivery_id("abc-1", {}, "trigger") == "abc-1"
    assert delivery_id(None, {"delivery": "abc-2"}, "trigger") == "abc-2"
    with pytest.raises(Refusal) as mismatch:
        delivery_id("abc-1", {"delivery": "abc-2"}, "trigger")
    assert mismatch.value.status == 401
    for bad in (None, "", "a b", "x" * 129):
        with pytest.raises(Refusal) as missing:
            delivery_id(bad, {}, "trigger")
        assert missing.value.status == 400


def test_signed_times_and_freshness() -> None:
    epoch = NOW.timestamp()
    for raw in (epoch, int(epoch), str(epoch), "2026-01-01T12:00:00Z", "2026-01-01T12:00:00"):
        assert parse_time(raw) == NOW
    assert signed_time(push(), "push") == NOW
    assert signed_time({"timestamp": "2026-01-01T13:00:00+01:00"}, "trigger") == NOW
    for payload, event in (
        ({}, "trigger"),
        ({"repository": {}}, "push"),
        ({"timestamp": "x"}, "trigger"),
    ):
        with pytest.raises(Refusal) as info:
            signed_time(payload, event)
        assert info.value.status == 400
    check_fresh(NOW - dt.timedelta(seconds=299), NOW, 300)
    check_fresh(NOW + dt.timedelta(seconds=299), NOW, 300)
    for offset in (301, -301):
        with pytest.raises(Refusal) as stale:
            check_fresh(NOW - dt.timedelta(seconds=offset), NOW, 300)
        assert stale.value.status == 409


def test_a_push_plan_trains_at_the_pushed_commit() -> None:
    plan = plan_push(push("config/models/churn.yaml"), KNOWN, ["main"])
    [run] = plan.runs
    assert run.git_ref == "a" * 40 and plan.details["git_ref"] == "a" * 40
    assert plan.details["after"] == "a" * 40 and "at aaaaaaaaaaaa" in plan.note
    schema = {"properties": {k: {} for k in ("model", "reason", "git_ref", "max_evals")}}
    assert run_parameters(run, schema) == {
        "model": "churn",
        "reason": f"ci: acme/mlsteward@{'a' * 12}",
        "git_ref": "a" * 40,
    }
    assert run_tags(run) == ["webhook", f"git_ref:{'a' * 40}"]
    # A flow without the parameter still gets the tag; a caller's own git_ref wins.
    assert run_parameters(run, {"properties": {"model": {}}}) == {"model": "churn"}
    trigger = plan_trigger(
        {"action": "train", "model": "churn", "parameters": {"git_ref": "v1.2"}}, KNOWN, "d-1"
    )
    assert trigger.runs[0].git_ref == "v1.2" and trigger.details == {"git_ref": "v1.2"}
    assert run_parameters(trigger.runs[0], schema)["git_ref"] == "v1.2"
    assert run_tags(plan_trigger({"action": "score", "model": "churn"}, KNOWN, "d").runs[0]) == [
        "webhook"
    ]


@pytest.mark.parametrize("after", [None, "", "main", "A" * 40, "a" * 39, "--help"])
def test_a_push_that_would_train_without_a_commit_sha_is_refused(after: str | None) -> None:
    payload = {**push("config/models/churn.yaml"), "after": after}
    with pytest.raises(Refusal) as info:
        plan_push(payload, KNOWN, ["main"])
    assert info.value.status == 422 and "'after' must be the pushed commit" in info.value.reason
    docs = plan_push({**push("README.md"), "after": after}, KNOWN, ["main"])
    assert docs.runs == []  # nothing to train: no commit needed


# Found by fuzzing (tests/faults/test_fuzz_webhook.py): each once answered 500, or trained
# every model.


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000])
def test_a_body_nested_too_deeply_is_not_json(body: bytes) -> None:
    with pytest.raises(Refusal, match="nested too deeply") as refused:
        parse_body(body)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("commits", "field"),
    [
        (5, "'commits'"),
        ("abc", "'commits'"),
        ({"modified": ["x.py"]}, "'commits'"),
        ([3], "'commits'"),
        ([{"added": "x.py"}], "commits[0].added"),
        ([{"modified": [7]}], "commits[0].modified"),
        ([{"id": "1"}, {"removed": {"a": 1}}], "commits[1].removed"),
    ],
)
def test_a_push_whose_commits_are_not_lists_is_refused_naming_the_field(
    commits: object, field: str
) -> None:
    payload = {**push("docs/x.md"), "commits": commits}
    with pytest.raises(Refusal, match=re.escape(field)) as refused:
        plan_push(payload, KNOWN, ["main"])
    assert refused.value.status == 422
    assert refused.value.details["ref"] == "refs/heads/main"


@pytest.mark.parametrize("action", [["train"], {"train": 1}, 5, None])
def test_an_action_that_is_not_text_is_refused_naming_it(action: object) -> None:
    payload = {"action": action, "model": "heart_disease", "timestamp": 0}
    with pytest.raises(Refusal, match="unknown action") as refused:
        plan_trigger(payload, KNOWN, "d-1")
    assert refused.value.status == 422


def test_a_file_parameter_under_an_unknown_users_home_is_outside_the_roots() -> None:
    request = RunRequest("score", "heart_disease", {"source": "~no_such_user_xyz/x.csv"})
    with pytest.raises(Refusal, match=r"parameters\.source") as refused:
        check_paths(request, [str(REPO_ROOT / "data")])
    assert refused.value.status == 422
