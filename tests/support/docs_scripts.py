"""The scripts under ``docs/`` that write pages, loaded from their files for the tests that
keep those pages true (``docs/`` is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from tests.conftest import REPO_ROOT


@contextmanager
def docs_script(stem: str) -> Iterator[ModuleType]:
    """``docs/<stem>.py`` as a module, registered in ``sys.modules`` while it is used (a
    dataclass looks its module up while the class is built)."""
    name = f"mlsteward_docs_{stem}"
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "docs" / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
