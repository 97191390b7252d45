"""The wire format: pure functions and data, no sockets, no asyncio (see docs/protocol.md)."""

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
