"""Hypothesis strategies for CI webhook deliveries, each drawn as a recipe with the defects
it carries, so a test knows whether the gateway must refuse it, and which field or check a
refusal must name, without asking the gateway.

A recipe is made into bytes and headers at send time (``Recipe.make``): with a fresh
delivery id and the current clock, so two examples never collide by accident and a "fresh"
timestamp is fresh when the request arrives. A recipe without defects asks for something
valid: a plain trigger of a known model's deployment, a push that changes its config, a ping,
or a push that trains nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from mlsteward.gateway.signing import SIGNATURE_HEADER, sign

MODEL = "heart_disease"
SHA = "0123456789abcdef0123456789abcdef01234567"

# What a refusal must name for each defect (any of the words, case-insensitive).
NAMES: dict[str, tuple[str, ...]] = {
    "oversize": ("limit",),
    "unsigned": ("signature",),
    "bad_signature": ("signature",),
    "not_json": ("json",),
    "deep_json": ("json", "nested"),
    "not_object": ("json object",),
    "event": ("event",),
    "delivery": ("delivery",),
    "no_timestamp": ("timestamp", "pushed_at"),
    "bad_timestamp": ("timestamp", "pushed_at", "not a time", "stale", "future"),
    "stale": ("stale", "ago"),
    "future": ("future",),
    "extra_field": ("unknown field",),
    "action": ("action",),
    "model": ("model",),
    "parameters": ("parameters", "as the trigger's 'model'"),
    "unknown_parameter": ("unknown parameter",),
    "max_evals": ("max_evals",),
    "path": ("data root",),
    "ref": ("ref",),
    "commits": ("commits", "added", "modified", "removed"),
    "after": ("after",),
    "unknown_config": ("unknown model",),
    "replay": ("replay",),
}
NEEDS_SERVER = {"unknown_parameter"}
"""Defects only the deployment's parameter schema on a Prefect server can see."""


@dataclass(frozen=True)
class Recipe:
    """One delivery before it is signed: what it is and what is wrong with it."""

    kind: str  # trigger | push | ping | raw
    document: Any = None
    raw: bytes | None = None
    event: str | None = None
    defects: tuple[str, ...] = ()
    signature: str = "valid"  # valid | missing | wrong_secret | altered | malformed
    delivery: str = "fresh"  # fresh | missing | invalid | mismatch | body_only
    time: str = "now"  # now | stale | future | iso | naive_iso | epoch_text
    starts_runs: bool = False
    """Without defects: whether the delivery starts deployment runs (a ping does not)."""
    oversize: bool = False

    def __repr__(self) -> str:
        shown = f"raw={self.raw[:60]!r}..." if self.raw is not None else f"{self.document!r}"
        return (
            f"Recipe({self.kind}, {shown[:300]}, event={self.event!r}, "
            f"defects={self.defects}, signature={self.signature}, delivery={self.delivery}, "
            f"time={self.time}, oversize={self.oversize})"
        )

    def make(self, secret: str, now: dt.datetime, delivery: str) -> tuple[bytes, dict[str, str]]:
        """The exact body bytes and headers, signed (or not) as the recipe says."""
        body = self.raw if self.raw is not None else self._body(now, delivery)
        if self.oversize:
            body = body + b" " * (2 * 1024 * 1024)
        headers: dict[str, str] = {"Content-Type": "application/json"}
        if self.event is not None:
            headers["X-GitHub-Event"] = self.event
        header_id = {
            "fresh": delivery,
            "missing": None,
            "invalid": "../" + delivery,
            "mismatch": delivery + "-other",
            "body_only": None,
        }[self.delivery]
        if header_id is not None:
            headers["X-Mlsteward-Delivery"] = header_id
        if self.signature != "missing":
            headers[SIGNATURE_HEADER] = {
                "valid": lambda: sign(body, secret),
                "wrong_secret": lambda: sign(body, secret + "x"),
                "altered": lambda: sign(body + b" ", secret),
                "malformed": lambda: "sha1=" + sign(body, secret)[7:],
            }[self.signature]()
        return body, headers

    def _body(self, now: dt.datetime, delivery: str) -> bytes:
        doc = json.loads(json.dumps(self.document, allow_nan=True))
        when = {
            "now": now.timestamp(),
            "stale": (now - dt.timedelta(hours=2)).timestamp(),
            "future": (now + dt.timedelta(hours=2)).timestamp(),
            "iso": now.isoformat(),
            "naive_iso": now.astimezone(dt.UTC).replace(tzinfo=None).isoformat(),
            "epoch_text": str(now.timestamp()),
        }.get(self.time)
        if isinstance(doc, dict):
            if self.kind == "trigger":
                if "timestamp" in doc and doc["timestamp"] == "<now>" and when is not None:
                    doc["timestamp"] = when
                if doc.get("delivery") == "<id>":
                    doc["delivery"] = delivery
            repo = doc.get("repository")
            if self.kind == "push" and isinstance(repo, dict) and repo.get("pushed_at") == "<now>":
                repo["pushed_at"] = when
            if self.kind in ("push", "ping"):  # as GitHub's: no two bodies alike
                doc["hook_delivery"] = delivery
        return json.dumps(doc, allow_nan=True).encode()


# --- values, valid and not ----------------------------------------------------------------

WEIRD_JSON = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)

BAD_TIMESTAMPS = st.one_of(
    st.sampled_from(
        [
            "yesterday", "2024-13-01T00:00:00", "nan", "inf", "-inf", "1e300", "",
            "2024-01-01T00:00:00+25:00", "\u0661\u0662", True, False, [], {}, None,
        ]
    ),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, 10**30]),
)  # fmt: skip


@st.composite
def triggers(draw: st.DrawFn) -> Recipe:
    """A plain JSON trigger with zero or more broken fields."""
    defects: list[str] = []
    action = draw(st.sampled_from(["train", "score", "drift"]))
    doc: dict[str, Any] = {
        "action": action,
        "model": MODEL,
        "parameters": {},
        "timestamp": "<now>",
        "delivery": "<id>",
    }
    for _ in range(draw(st.integers(0, 2))):
        what = draw(
            st.sampled_from(
                ["action", "model", "parameters", "max_evals", "path", "extra_field",
                 "no_timestamp", "bad_timestamp", "delivery_type"]
            )
        )  # fmt: skip
        if what == "action":
            doc["action"] = draw(st.one_of(st.sampled_from(["deploy", "TRAIN", ""]), WEIRD_JSON))
        elif what == "model":
            doc["model"] = draw(
                st.one_of(
                    st.sampled_from(["../etc/passwd", "no_such_model", "Heart", "a/b", ""]),
                    WEIRD_JSON,
                )
            )
        elif what == "parameters":
            doc["parameters"] = draw(
                st.sampled_from([[1], "x", 5, {"model": MODEL}, {"no_such_parameter": 1}])
            )
            if doc["parameters"] == {"no_such_parameter": 1}:
                what = "unknown_parameter"
        elif what == "max_evals" and doc["action"] == "train":
            doc["parameters"] = {"max_evals": draw(st.integers(10**4, 10**12))}
        elif what == "path" and doc["action"] == "score":
            doc["parameters"] = {
                "source": draw(st.sampled_from(["/etc/passwd", "../../x.csv", "~nobody/x.csv",
                                                "~no_such_user_xyz/x.csv", "s3://elsewhere/x",
                                                "data/\x00x.csv"]))
            }  # fmt: skip
        elif what == "extra_field":
            doc[draw(st.sampled_from(["nope", "Action", "params"]))] = draw(WEIRD_JSON)
        elif what == "no_timestamp":
            doc.pop("timestamp", None)
        elif what == "bad_timestamp":
            doc["timestamp"] = draw(BAD_TIMESTAMPS)
        elif what == "delivery_type":
            doc["delivery"] = draw(st.sampled_from([5, [], {"a": 1}, True]))
        else:
            continue
        defects.append(what if what != "delivery_type" else "delivery")
    defects = [d for d in defects if not _harmless(d, doc)]
    time = draw(
        st.sampled_from(["now", "now", "iso", "naive_iso", "epoch_text", "stale", "future"])
    )
    if time in ("stale", "future") and doc.get("timestamp") == "<now>":
        defects.append(time)
    if doc.get("timestamp") != "<now>" and "no_timestamp" not in defects:
        defects = [*defects, "bad_timestamp"] if "bad_timestamp" not in defects else defects
    return Recipe("trigger", doc, defects=tuple(dict.fromkeys(defects)), time=time,
                  starts_runs=True)  # fmt: skip


def _harmless(defect: str, doc: dict[str, Any]) -> bool:
    """A drawn 'defect' that happens to be valid (a known action drawn as a weird value)."""
    if defect == "action":
        return doc["action"] in ("train", "score", "drift")
    if defect == "model":
        return doc["model"] == MODEL
    return False


@st.composite
def pushes(draw: st.DrawFn) -> Recipe:
    """A GitHub push: to main changing the model's config (runs), or docs only / another
    branch / a tag (accepted, nothing to run), with zero or more broken fields."""
    shape = draw(st.sampled_from(["config", "docs", "branch", "tag"]))
    files = {"config": ["config/models/heart_disease.yaml"], "docs": ["docs/x.md"]}.get(
        shape, ["mlsteward/x.py"]
    )
    ref = {"branch": "refs/heads/feature", "tag": "refs/tags/v1"}.get(shape, "refs/heads/main")
    doc: dict[str, Any] = {
        "ref": ref,
        "before": "1" * 40,
        "after": SHA,
        "repository": {"full_name": "acme/mlsteward", "pushed_at": "<now>"},
        "commits": [{"id": SHA, "added": [], "modified": files, "removed": []}],
    }
    defects: list[str] = []
    runs = shape == "config"
    what = draw(
        st.sampled_from(
            [None, None, "ref", "commits", "after", "unknown_config", "no_timestamp",
             "bad_timestamp", "repository", "full_name"]
        )
    )  # fmt: skip
    if what == "ref":
        doc["ref"] = draw(st.sampled_from([5, None, [], {"a": 1}]))
        defects.append("ref")
    elif what == "commits":
        shapes = [5, "abc", {"modified": 1}, [{"modified": 7}], [{"added": "x.py"}],
                  [{"removed": {"a": 1}}], [3], True]  # fmt: skip
        bad = draw(st.sampled_from(shapes))
        doc["commits"] = bad
        if shape in ("config", "docs"):  # a branch or tag push never reads its commits
            defects.append("commits")
    elif what == "after" and runs:
        doc["after"] = draw(st.sampled_from(["abc", SHA.upper(), 5, None, ""]))
        defects.append("after")
    elif what == "unknown_config" and shape in ("config", "docs"):
        doc["commits"][0]["modified"] = ["config/models/no_such_model.yaml"]
        defects.append("unknown_config")
    elif what == "no_timestamp":
        doc["repository"].pop("pushed_at")
        defects.append("no_timestamp")
    elif what == "bad_timestamp":
        doc["repository"]["pushed_at"] = draw(BAD_TIMESTAMPS)
        defects.append("bad_timestamp")
    elif what == "full_name":  # not a defect: only shown in the answer and the audit record
        doc["repository"]["full_name"] = draw(WEIRD_JSON)
    elif what == "repository":
        doc["repository"] = draw(st.sampled_from([[1], "acme", 5, None]))
        defects.append("no_timestamp")
    return Recipe("push", doc, event="push", defects=tuple(defects), starts_runs=runs,
                  delivery="fresh")  # fmt: skip


@st.composite
def raw_bodies(draw: st.DrawFn) -> Recipe:
    """Bodies that are no trigger at all: bytes, text, JSON of the wrong shape, deep nesting,
    JSON with NaN."""
    kind = draw(st.sampled_from(["bytes", "text", "shape", "deep", "nan"]))
    if kind == "bytes":
        raw = draw(st.binary(max_size=200))
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            return Recipe("raw", raw=raw, defects=("not_json",))
        defect = "not_object" if not isinstance(parsed, dict) else "no_timestamp"
        return Recipe("raw", raw=raw, defects=(defect,))
    if kind == "text":
        raw = draw(st.text(max_size=100)).encode("utf-8", "surrogatepass")
        return Recipe("raw", raw=b"{{" + raw, defects=("not_json",))
    if kind == "shape":
        doc = draw(st.one_of(st.lists(WEIRD_JSON, max_size=3), WEIRD_JSON.filter(
            lambda v: not isinstance(v, dict))))  # fmt: skip
        return Recipe("raw", raw=json.dumps(doc).encode(), defects=("not_object",))
    if kind == "deep":
        depth = draw(st.sampled_from([5_000, 50_000, 180_000]))  # 0.9 MB at most: under the limit
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        return Recipe("raw", raw=opener * depth, defects=("deep_json", "not_json"))
    doc = {
        "action": "train",
        "model": MODEL,
        "timestamp": math.nan,
        "parameters": {},
        "delivery": "<id>",
    }
    return Recipe("trigger", doc, defects=("bad_timestamp",), starts_runs=True)


@st.composite
def deliveries(draw: st.DrawFn) -> Recipe:
    """A delivery of any kind, with header and signature defects drawn on top."""
    ping = st.just(Recipe("ping", {"zen": "hi"}, event="ping"))
    recipe: Recipe = draw(st.one_of(triggers(), pushes(), triggers(), pushes(), raw_bodies(), ping))
    defects = list(recipe.defects)
    signature = draw(
        st.sampled_from(["valid"] * 6 + ["missing", "wrong_secret", "altered", "malformed"])
    )
    if signature == "missing":
        defects.append("unsigned")
    elif signature != "valid":
        defects.append("bad_signature")
    delivery = recipe.delivery
    if recipe.kind == "trigger" and recipe.raw is None:
        delivery = draw(
            st.sampled_from(["fresh"] * 4 + ["body_only", "missing", "invalid", "mismatch"])
        )
        if delivery in ("invalid", "mismatch"):
            defects.append("delivery")
        elif delivery == "missing":
            # the body's 'delivery' is the id; drop it too for a delivery without any
            if draw(st.booleans()):
                recipe = _without_body_id(recipe)
                defects.append("delivery")
            else:
                delivery = "body_only"
    elif draw(st.integers(0, 9)) == 0:
        delivery = draw(st.sampled_from(["missing", "invalid"]))
        defects.append("delivery")
    event = recipe.event
    if draw(st.integers(0, 11)) == 0:
        event = draw(st.sampled_from(["issues", "Push", "", "pull_request"]))
        defects.append("event")
    oversize = draw(st.integers(0, 19)) == 0
    if oversize:
        defects.append("oversize")
    replay = not defects and draw(st.integers(0, 4)) == 0
    return Recipe(
        recipe.kind, recipe.document, recipe.raw, event, tuple(dict.fromkeys(defects)),
        signature, delivery, recipe.time, recipe.starts_runs, oversize,
    ) if not replay else _Replay.of(recipe, signature, delivery, event)  # fmt: skip


def _without_body_id(recipe: Recipe) -> Recipe:
    doc = dict(recipe.document)
    doc.pop("delivery", None)
    return Recipe(recipe.kind, doc, defects=recipe.defects, time=recipe.time,
                  starts_runs=recipe.starts_runs)  # fmt: skip


@dataclass(frozen=True, repr=False)
class _Replay(Recipe):
    """A valid delivery sent twice: the second time is a replay (409)."""

    replay: bool = field(default=True)

    @classmethod
    def of(cls, recipe: Recipe, signature: str, delivery: str, event: str | None) -> _Replay:
        return cls(recipe.kind, recipe.document, recipe.raw, event, recipe.defects, signature,
                   delivery, recipe.time, recipe.starts_runs, False)  # fmt: skip


def is_replay(recipe: Recipe) -> bool:
    return isinstance(recipe, _Replay)
