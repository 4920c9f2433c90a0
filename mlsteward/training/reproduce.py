"""Reproduction reports: what was rebuilt, what matched, and where a rebuild first diverged.

A reproduction walks the recipe in training order (data → feature service → training set →
split → params → metrics → artifact). Each step is compared with what was recorded at
registration; the first step that differs is the answer to "why is this not the same model",
and the later steps say how much it mattered (metric deltas). The environment is compared too,
but as context: a different library version is a *reason* a rebuild may diverge, not a
divergence by itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mlsteward.training.lineage import UNKNOWN, file_sha256, git_info, library_versions

STEPS = (
    "recipe",
    "data_digest",
    "feature_service",
    "training_set",
    "split",
    "params",
    "metrics",
    "artifact",
    "stored_artifact",
)
"""Comparison steps in the order training takes them; the first differing one is reported."""

Status = Literal["same", "differs", "not_run"]
Result = Literal["identical", "diverged", "refused"]
Mode = Literal["params", "full"]


class ReproductionSpec(BaseModel):
    """One reproduction run, worked out once at its start.

    Only the model's name: a rebuild reads the recorded config, never today's (which may have
    changed, or no longer load), so nothing of today's config is resolved here.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    version: str | None
    """The version to rebuild; None: the current champion."""
    mode: Mode
    """``params``: refit the recorded best params; ``full``: re-run the whole search."""
    strict: bool
    """Refuse to rebuild when the environment differs from the one that trained."""
    actor: str

    @classmethod
    def resolve(
        cls,
        model: str,
        *,
        version: str | None = None,
        full: bool = False,
        strict: bool = False,
        actor: str,
    ) -> ReproductionSpec:
        """An empty ``version`` means the champion, as an absent one does."""
        mode: Mode = "full" if full else "params"
        return cls(model=model, version=version or None, mode=mode, strict=strict, actor=actor)


@dataclass
class Step:
    name: str
    status: Status
    detail: str
    recorded: Any = None
    rebuilt: Any = None
    seconds: float = 0.0


@dataclass
class EnvironmentDifference:
    """One way today's environment differs from the one that trained the version."""

    what: str
    recorded: str
    current: str

    def __str__(self) -> str:
        return f"{self.what}: recorded {self.recorded}, now {self.current}"


@dataclass
class ReproductionReport:
    model: str
    version: str
    mode: Mode
    result: Result = "identical"
    first_divergence: str | None = None
    steps: list[Step] = field(default_factory=list)
    environment: list[EnvironmentDifference] = field(default_factory=list)
    config_changes: list[dict[str, Any]] = field(default_factory=list)
    metric_deltas: dict[str, float] = field(default_factory=dict)
    rebuilt_artifact_sha256: str | None = None
    registered_artifact_sha256: str | None = None
    original_training_seconds: float | None = None
    seconds: float = 0.0
    report_path: str | None = None

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        if step.status == "differs" and self.first_divergence is None:
            self.first_divergence = step.name
            self.result = "diverged"
        return step

    def close(self, why_not_run: str) -> None:
        """List every step in training order, the ones never reached as ``not_run``, so a
        report shows what was *not* checked as plainly as what was."""
        seen = {s.name for s in self.steps}
        self.steps += [Step(name, "not_run", why_not_run) for name in STEPS if name not in seen]
        self.steps.sort(key=lambda s: STEPS.index(s.name))

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    @property
    def summary(self) -> str:
        """The tag value: short enough for the MLflow UI, precise enough to act on."""
        if self.result == "diverged":
            return f"diverged at {self.first_divergence}"
        return self.result

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = self.summary
        return d

    def write(self, workdir: Path) -> Path:
        """The report as ``report.json`` beside the rebuilt model, so a divergence can be
        inspected afterwards; its path goes into the report first."""
        path = workdir / "report.json"
        self.report_path = str(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str))
        return path

    def audit_details(self) -> dict[str, Any]:
        """The audit record's details: the outcome per step, not the steps' full detail."""
        return {
            "result": self.result,
            "mode": self.mode,
            "first_divergence": self.first_divergence,
            "steps": {s.name: s.status for s in self.steps},
            "environment": [str(e) for e in self.environment],
            "config_changes": [c["key"] for c in self.config_changes],
            "metric_deltas": self.metric_deltas,
            "rebuilt_artifact_sha256": self.rebuilt_artifact_sha256,
            "report": self.report_path,
            "seconds": self.seconds,
        }

    def to_markdown(self) -> str:
        """The report as the flow run's artifact shows it."""
        rows = "\n".join(
            f"| {s.name} | {s.status} | {s.detail} | {s.seconds:.1f} s |" for s in self.steps
        )
        env = "\n".join(f"- {e}" for e in self.environment) or "- none"
        cfg = "\n".join(f"- `{c['key']}`" for c in self.config_changes) or "- none"
        return (
            f"# Reproduction of {self.model} v{self.version}: **{self.summary}**\n\n"
            f"Mode: {self.mode}; {self.seconds:.1f} s (original training "
            f"{self.original_training_seconds or 0:.1f} s)\n\n"
            f"| step | result | detail | time |\n|---|---|---|---|\n{rows}\n\n"
            f"## Environment differences\n{env}\n\n"
            f"## Config changed since training (information; the recorded config was used)\n"
            f"{cfg}\n"
        )


class ReproductionResult(BaseModel):
    """A finished reproduction, as the reproduce flow returns it (the report and its summary)."""

    model: str
    version: str
    mode: Mode
    result: Result
    first_divergence: str | None
    steps: list[Step]
    environment: list[EnvironmentDifference]
    config_changes: list[dict[str, Any]]
    metric_deltas: dict[str, float]
    rebuilt_artifact_sha256: str | None
    registered_artifact_sha256: str | None
    original_training_seconds: float | None
    seconds: float
    report_path: str | None
    summary: str

    @classmethod
    def of(cls, report: ReproductionReport) -> ReproductionResult:
        return cls.model_validate(report.to_dict())


def environment_differences(
    tags: dict[str, str], project_root: Path
) -> list[EnvironmentDifference]:
    """Where the code, lock file and libraries today differ from those that trained.

    A tree with uncommitted changes (then or now) is a difference even at the same commit: the
    commit alone no longer says which code ran.
    """
    out: list[EnvironmentDifference] = []
    git = git_info(project_root)
    recorded_commit = tags.get("lineage.git_commit", UNKNOWN)
    if recorded_commit != git["commit"]:
        out.append(EnvironmentDifference("git commit", recorded_commit, git["commit"]))
    recorded_dirty = tags.get("lineage.git_dirty", UNKNOWN)
    if "true" in (recorded_dirty, git["dirty"]):
        out.append(
            EnvironmentDifference(
                "uncommitted changes", f"dirty={recorded_dirty}", f"dirty={git['dirty']}"
            )
        )
    recorded_lock = tags.get("lineage.lock_sha256", UNKNOWN)
    lock = file_sha256(project_root / "uv.lock")
    if recorded_lock != lock:
        out.append(EnvironmentDifference("uv.lock sha256", recorded_lock, lock))
    for name, version in library_versions().items():
        recorded = tags.get(f"lineage.lib.{name}")
        if recorded is not None and recorded != version:
            out.append(EnvironmentDifference(f"library {name}", recorded, version))
    return out


def _same_number(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def metric_deltas(recorded: dict[str, float], rebuilt: dict[str, float]) -> dict[str, float]:
    """rebuilt - recorded for every metric recorded at training; exact, no tolerance.

    Identical data, params and seed give bit-identical floats, so any non-zero delta is a real
    divergence, however small.
    """
    out = {}
    for name, value in sorted(recorded.items()):
        new = rebuilt.get(name)
        if not _same_number(value, new):
            out[name] = float("nan") if new is None else new - value
    return out
