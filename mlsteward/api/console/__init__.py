"""The governance console: server-rendered pages over the governance API, at ``/ui``.

A sub-application of the API's app, so it has its own answers to refusals (an HTML page with
the same status the API would give, or the sign-in page) while deciding through the same core
functions, with the same tokens and roles.
"""

from __future__ import annotations

from mlsteward.api.console.app import create_console

__all__ = ["create_console"]
