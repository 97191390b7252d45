"""The wire format: pure functions and data, no sockets, no asyncio (see docs/protocol.md).

The names below load their module on first use, so that ``import openenv_gym.protocol.codec``
loads neither ``spaces`` nor gymnasium.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openenv_gym.protocol.codec import DEFAULT_MAX_MESSAGE_BYTES, decode, encode
    from openenv_gym.protocol.messages import PROTOCOL_VERSION, Op, Status
    from openenv_gym.protocol.spaces import space_from_data, space_to_data

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "Op",
    "Status",
    "decode",
    "encode",
    "space_from_data",
    "space_to_data",
]

_HOMES = {
    "DEFAULT_MAX_MESSAGE_BYTES": "codec",
    "decode": "codec",
    "encode": "codec",
    "PROTOCOL_VERSION": "messages",
    "Op": "messages",
    "Status": "messages",
    "space_from_data": "spaces",
    "space_to_data": "spaces",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use.

    Raises:
        AttributeError: ``name`` is not public here.

    """
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
