"""What a signed delivery may ask its runs to do: no more trials than the model allows, and no
file outside the data roots.

A valid signature says a request comes from CI; it does not make every request sensible. A
trial count far above what a model is tuned with holds the workers for hours, and a file
parameter is opened by the flow run with the worker's rights, so without a limit it could read
any file the worker can. So a training run may ask for at most the model's
``tuning.max_evals_ceiling`` trials, and each file parameter must lie under one of the
gateway's data roots, checked as the run will open it (relative to the project root, ``~``
expanded, ``..`` and symlinks resolved). A URL is accepted only under a configured URL root.
Each refusal is a 422 naming the parameter and the limit.
"""

from __future__ import annotations

from mlsteward.config.models import get_model_config
from mlsteward.errors import ConfigError
from mlsteward.gateway.payloads import Refusal, RunRequest
from mlsteward.gateway.settings import DATA_ROOTS_VARIABLE, local_path

MAX_EVALS = "max_evals"
PATH_PARAMETERS = ("source", "current", "entities")
"""The flows' parameters that name a file a run reads (scoring: source, entities; drift:
current)."""


def max_evals_ceiling(model: str) -> int:
    """The model's ``tuning.max_evals_ceiling``, read per delivery (a config change needs no
    gateway restart).

    Raises:
        Refusal: 422 when the model's config does not load, so its ceiling is unknown.
    """
    try:
        return get_model_config(model).tuning.max_evals_ceiling
    except ConfigError as exc:
        raise Refusal(
            422,
            f"parameters.max_evals: model {model}'s ceiling is unknown, its config does "
            f"not load: {exc}",
            field=MAX_EVALS,
        ) from exc


def check_max_evals(request: RunRequest, ceiling: int) -> None:
    """Refuse more trials than ``ceiling``; a value that is not a whole number is left to the
    deployment's parameter schema, which names the wrong type.

    Raises:
        Refusal: 422 naming ``max_evals`` and the ceiling.
    """
    value = request.parameters.get(MAX_EVALS)
    if isinstance(value, bool) or not isinstance(value, int):
        return
    if value > ceiling:
        raise Refusal(
            422,
            f"parameters.max_evals: {value} trials is above model {request.model}'s ceiling "
            f"of {ceiling} (tuning.max_evals_ceiling)",
            field=MAX_EVALS,
            ceiling=ceiling,
        )


def under_roots(value: str, roots: list[str]) -> bool:
    """Whether ``value`` (a path or URL) names something under one of ``roots``."""
    if "://" in value:
        segments = value.split("://", 1)[1].split("/")
        if any(s in (".", "..") for s in segments):
            return False
        return any(value == root or value.startswith(root + "/") for root in roots if "://" in root)
    try:
        path = local_path(value)
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop, '~nobody'
        return False
    return any(path.is_relative_to(root) for root in roots if "://" not in root)


def check_paths(request: RunRequest, roots: list[str]) -> None:
    """Refuse a file parameter outside ``roots``; a value that is not text is left to the
    deployment's parameter schema.

    Raises:
        Refusal: 422 naming the parameter and the roots.
    """
    for name in PATH_PARAMETERS:
        value = request.parameters.get(name)
        if isinstance(value, str) and not under_roots(value, roots):
            raise Refusal(
                422,
                f"parameters.{name}: {value!r} is not under a data root of the gateway "
                f"({', '.join(roots)}; {DATA_ROOTS_VARIABLE} sets them)",
                field=name,
            )


def check_run(request: RunRequest, roots: list[str]) -> None:
    """Every limit on one run (reads the model's config only when trials are asked for).

    Raises:
        Refusal: 422 naming the parameter over its limit.
    """
    check_paths(request, roots)
    if request.action == "train" and MAX_EVALS in request.parameters:
        check_max_evals(request, max_evals_ceiling(request.model))
