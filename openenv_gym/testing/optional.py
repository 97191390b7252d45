"""Optional families in the test suite: a skip that says how to enable it, or a failure in CI.

A test that needs an optional family (a Docker engine, the OpenEnv package, the MCP SDK, torch,
bubblewrap, ...) calls :func:`require_module` or :func:`unavailable`. Without the family it is
skipped with a reason naming what to install; with ``OPENENV_GYM_REQUIRE_ALL=1`` (what CI sets)
or ``OPENENV_GYM_REQUIRE_<FAMILY>=1`` the skip becomes a failure, so CI can never pass by
skipping.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

__all__ = ["REQUIRE_ALL", "require_module", "required", "unavailable"]

REQUIRE_ALL = "OPENENV_GYM_REQUIRE_ALL"
"""Set to ``1`` to turn every optional-family skip into a failure."""


def required(family: str) -> bool:
    """Tell whether ``family`` must be available (``OPENENV_GYM_REQUIRE_ALL`` or its own var)."""
    own = f"OPENENV_GYM_REQUIRE_{family.upper().replace('-', '_')}"
    return "1" in (os.environ.get(REQUIRE_ALL), os.environ.get(own))


def unavailable(family: str, reason: str) -> NoReturn:
    """Skip the calling test because ``family`` is missing, or fail it if it is required.

    Raises:
        pytest.skip.Exception: ``family`` is not required.
        pytest.fail.Exception: it is.

    """
    import pytest

    if required(family):
        pytest.fail(f"{reason} (required: {REQUIRE_ALL}=1 or OPENENV_GYM_REQUIRE_{family.upper()})")
    pytest.skip(
        f"{reason}; set OPENENV_GYM_REQUIRE_{family.upper()}=1 to make this a failure",
        allow_module_level=True,  # also called at import time of a test module
    )


def require_module(name: str, *, family: str, install: str) -> ModuleType:
    """Import module ``name`` of an optional family, or skip/fail (see :func:`unavailable`).

    Args:
        name: the module to import.
        family: the optional family it belongs to (``"mcp"``, ``"openenv"``, ...).
        install: how to get it, e.g. ``"pip install 'openenv-gym[mcp]'"``.

    Returns:
        The imported module.

    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(family, f"{name} is not importable ({exc}); {install}")
