"""A real local HTTP server standing in for a webhook (Slack, a pager): it keeps every JSON body
POSTed to it, so a test reads what a notification automation delivered."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """A receiver on a free loopback port for the ``with`` block."""
    posts: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_port}/hook", posts)
    finally:
        server.shutdown()
        server.server_close()
