"""Checking OpenLineage events against the spec, offline.

The spec's JSON schemas (``OpenLineage.json`` and every facet's) are vendored in
``tests/fixtures/openlineage/`` at the versions the installed client's ``schemaURL``s name, and
our own facets' schema ships with the code; every ``$ref`` resolves from these files, so a test
downloads nothing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mlsteward.data.lineage_events import facets_schema_path

SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "openlineage"
RUN_EVENT = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


def _documents() -> Iterator[dict[str, Any]]:
    for path in [SPEC / "OpenLineage.json", *sorted((SPEC / "facets").glob("*.json"))]:
        yield json.loads(path.read_text())
    yield json.loads(facets_schema_path().read_text())


@cache
def documents() -> dict[str, dict[str, Any]]:
    """Every schema document by its ``$id``."""
    return {doc["$id"]: doc for doc in _documents()}


@cache
def registry() -> Registry:
    return Registry().with_resources(
        (uri, Resource.from_contents(doc, default_specification=DRAFT202012))
        for uri, doc in documents().items()
    )


def _formats() -> FormatChecker:
    """jsonschema checks ``date-time`` and ``uuid`` itself; ``uri`` needs a package we do not
    install, so: a scheme and no spaces."""
    checker = FormatChecker()

    @checker.checks("uri")
    def _uri(value: object) -> bool:
        return not isinstance(value, str) or (bool(urlsplit(value).scheme) and " " not in value)

    return checker


def _validate(instance: Any, ref: str) -> None:
    Draft202012Validator({"$ref": ref}, registry=registry(), format_checker=_formats()).validate(
        instance
    )


def _facets(event: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, key, facet) for every facet of a run event."""
    yield from (("run", k, f) for k, f in (event["run"].get("facets") or {}).items())
    yield from (("job", k, f) for k, f in (event["job"].get("facets") or {}).items())
    for side, extra in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        for dataset in event.get(side) or []:
            for group in ("facets", extra):
                for key, facet in (dataset.get(group) or {}).items():
                    yield f"{side}.{dataset['name']}.{group}", key, facet


def validate_run_event(event: dict[str, Any]) -> set[str]:
    """Validate a run event and each of its facets against the schema its ``_schemaURL``
    names, and that each spec facet sits under the key its schema declares. Returns the facet
    schemas used.

    Raises:
        jsonschema.ValidationError: the event or a facet breaks its schema.
        AssertionError: a facet names a schema that is not vendored, or sits under a key its
            schema does not declare.
    """
    assert event["schemaURL"] == RUN_EVENT, event["schemaURL"]
    _validate(event, RUN_EVENT)
    used: set[str] = set()
    for where, key, facet in _facets(event):
        url = facet["_schemaURL"]
        base, _, pointer = url.partition("#")
        assert base in documents(), f"{where}.{key}: schema {url} is not vendored"
        _validate(facet, url)
        declared = documents()[base].get("properties") or {}
        if declared:  # a spec facet's file names the key it goes under
            refs = {k: v.get("$ref") for k, v in declared.items()}
            assert refs.get(key) == f"#{pointer}", f"{where}: {key!r} is not {url}'s key {refs}"
        used.add(url)
    return used


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events the file transport wrote: one JSON document a line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class _Collector(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(
            {"path": self.path, "headers": dict(self.headers), "event": json.loads(body)}
        )
        self.send_response(201)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextmanager
def lineage_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A lineage server on loopback that keeps every request it is sent: its URL, and the
    requests (path, headers, event)."""
    received: list[dict[str, Any]] = []
    handler = type("Handler", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
