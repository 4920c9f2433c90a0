"""Forked child processes in tests that report their own verdict."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any


def in_child(target: Callable[..., Any]) -> Callable[..., None]:
    """Run a child's body and leave through ``os._exit`` with its verdict.

    A forked child otherwise runs the exit handlers it inherited; with Prefect's test harness
    running in the parent those exit non-zero in the child, whatever the body did.
    """

    def run(*args: Any) -> None:
        try:
            target(*args)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        os._exit(0)

    return run
