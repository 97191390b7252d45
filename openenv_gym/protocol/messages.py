"""Message types, envelopes and validation of control messages (normative: docs/protocol.md).

Every WebSocket message is one binary frame holding one msgpack message (see ``codec``):

* a request is ``[op, request_id, body]``;
* a reply is ``[status, request_id, body]`` with ``status`` 0 (ok) or 1 (error).

Control bodies (HELLO, MAKE, RESET, CALL, ...) are validated with pydantic models. The STEP body
is the batch of actions itself and is not validated here: the hot path carries whole arrays.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from openenv_gym.errors import DecodeError
from openenv_gym.protocol.compression import DEFAULT_THRESHOLD, CodecName

__all__ = [
    "POOL_EVENT",
    "PROTOCOL_VERSION",
    "REQUEST_BOUNDS",
    "REQUEST_PREFIXES",
    "AttrRequest",
    "AutoresetModeName",
    "CallRequest",
    "ErrorBody",
    "Hello",
    "HelloReply",
    "InfoForm",
    "MakeReply",
    "MakeRequest",
    "Op",
    "PoolResetRequest",
    "PoolSendRequest",
    "RequestBound",
    "ResetRequest",
    "ServerVectorization",
    "SetAttrRequest",
    "Status",
    "StepIsolation",
    "parse_body",
    "parse_reply",
    "parse_request",
    "peek_op",
    "request_bound",
]

PROTOCOL_VERSION = 1
"""The version this package speaks. Bumped on any incompatible change to docs/protocol.md."""

AutoresetModeName = Literal["NextStep", "SameStep", "Disabled"]
ServerVectorization = Literal["sync", "vector_entry_point"]
"""How a server batches a session's envs: a ``SyncVectorEnv`` of single envs, or the spec's
native ``gymnasium.vector.VectorEnv`` (its ``vector_entry_point``)."""
InfoForm = Literal["merges", "vector"]
"""How batched infos travel: ``[env_index, info]`` merges, or one vector-merged info dict."""
StepIsolation = Literal["none", "process"]
"""Where a pool session's envs run: in the server process, or each in a child process the
server kills when a step outlives its deadline."""

POOL_EVENT = 2
"""Status of a message a server pushes on a pool session, unasked: ``[2, 0, results]`` (not a
reply: ``Status`` stays OK/ERROR, so a client that never opens a pool session refuses it)."""


class Op(enum.IntEnum):
    """Request opcodes."""

    HELLO = 0
    MAKE = 1
    RESET = 2
    STEP = 3
    RENDER = 4
    CALL = 5
    GET_ATTR = 6
    SET_ATTR = 7
    STATE = 8
    CLOSE = 9
    # Pool sessions only (MakeRequest.pool): old clients never send them.
    POOL_SEND = 10
    POOL_RESET = 11


class Status(enum.IntEnum):
    """Reply status codes."""

    OK = 0
    ERROR = 1


@dataclasses.dataclass(frozen=True)
class RequestBound:
    """How large one request of an op may be; checked before the request is decoded.

    Attributes:
        max_bytes: the largest message; ``None``: the connection's message limit.
        max_values: the most values (at any depth) the message may build, plus
            ``values_per_env`` for each env of the session.
        values_per_env: see ``max_values``.

    """

    max_bytes: int | None
    max_values: int
    values_per_env: int = 0


_SMALL = RequestBound(max_bytes=4096, max_values=256)
_LARGE = RequestBound(max_bytes=None, max_values=65536, values_per_env=64)

REQUEST_BOUNDS: dict[Op, RequestBound] = {
    # Nothing before MAKE may be large: a connection that has not even said HELLO gets 4 KiB.
    Op.HELLO: _SMALL,
    Op.CLOSE: _SMALL,
    Op.MAKE: RequestBound(max_bytes=1 << 20, max_values=65536),
    Op.RENDER: _SMALL,
    Op.STATE: _SMALL,
    Op.GET_ATTR: _SMALL,
    # Bodies of any size (one array of actions, user options and arguments), few values.
    Op.RESET: _LARGE,
    Op.STEP: _LARGE,
    Op.CALL: _LARGE,
    Op.SET_ATTR: _LARGE,
    Op.POOL_SEND: _LARGE,
    Op.POOL_RESET: _LARGE,
}
"""Each op's bound (normative: docs/protocol.md, "Request bounds")."""


def request_bound(op: Op, *, max_message_bytes: int, num_envs: int) -> tuple[int, int]:
    """Return the largest message and the most values a request of ``op`` may have.

    Args:
        op: the request's op.
        max_message_bytes: the connection's message limit (no bound is above it).
        num_envs: how many envs the session runs (0 before MAKE).

    Returns:
        ``(max_bytes, max_values)``.

    """
    bound = REQUEST_BOUNDS[op]
    max_bytes = max_message_bytes if bound.max_bytes is None else bound.max_bytes
    return min(max_bytes, max_message_bytes), bound.max_values + bound.values_per_env * num_envs


# Every msgpack encoder writes ``[op, request_id, body]`` as a fixarray of 3 (0x93) whose first
# element, a small int, is a positive fixint: the first two bytes name the op.
REQUEST_PREFIXES: dict[bytes, int] = {bytes((0x93, op)): int(op) for op in Op}
"""The first two bytes of a request of each op, as encoders write it (plain int values: an
``IntEnum`` hashes in Python, ~0.3 µs a lookup on the hot path)."""


def peek_op(frame: bytes) -> Op | None:
    """Return the op of a request frame without decoding it, or ``None`` if it is not plain.

    Args:
        frame: the request's bytes.

    Returns:
        The op its first two bytes name (see ``REQUEST_PREFIXES``), else ``None``.

    """
    op = REQUEST_PREFIXES.get(frame[:2])
    return None if op is None else Op(op)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class _Request(_Model):
    """A request body: validated strictly (no coercion of ``"1"`` or ``1.0`` into ints)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, strict=True
    )


_ModelT = TypeVar("_ModelT", bound=_Model)


class Hello(_Request):
    """First request of every connection: which protocol versions the client speaks.

    ``compression`` lists the codecs the client accepts (``protocol/compression.py``), in its
    order of preference; empty (the default, left out on the wire) asks for none.
    ``compression_threshold`` is the smallest message either side then compresses.
    """

    protocol_version: int
    client: str = ""
    compression: list[str] = Field(default_factory=list, max_length=8)
    compression_threshold: int = Field(default=DEFAULT_THRESHOLD, ge=0)

    def wire(self) -> dict[str, Any]:
        """Return the body to send: fields at their defaults are left out, as old clients do."""
        return self.model_dump(exclude_defaults=True)


class HelloReply(_Model):
    """The server's answer to HELLO: its version, what it hosts, the codec it chose."""

    protocol_version: int
    server: str
    specs: list[str]
    allow_any_id: bool
    compression: CodecName | None = None
    """The codec both sides use from the next message on; ``None`` (left out): none."""

    def wire(self) -> dict[str, Any]:
        """Return the body to send: fields at their defaults are left out, as old servers do."""
        return self.model_dump(exclude_defaults=True)


class MakeRequest(_Request):
    """Create the session's environments.

    With ``server_vectorization="sync"`` (the default, and what a request without the field
    means), ``autoreset_mode=None`` asks for one plain ``gymnasium.Env`` (no batching, no
    autoreset); otherwise ``num_envs`` envs are stepped as one ``SyncVectorEnv`` in that mode.
    With ``"vector_entry_point"`` the spec's native vector env runs the ``num_envs`` envs in
    the autoreset mode it declares; ``autoreset_mode`` is then ``None`` (whatever it declares)
    or must be that mode.
    """

    env_id: str = Field(min_length=1, max_length=512)
    num_envs: int = Field(default=1, ge=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    autoreset_mode: AutoresetModeName | None = None
    server_vectorization: ServerVectorization = "sync"
    pool: bool = False
    """A pool session: ``num_envs`` independent envs stepped by POOL_SEND (section 5.12)."""

    @model_validator(mode="after")
    def _pool_alone(self) -> MakeRequest:
        if self.pool and (self.autoreset_mode is not None or self.server_vectorization != "sync"):
            raise ValueError("a pool session takes no autoreset_mode and no server_vectorization")
        return self

    def wire(self) -> dict[str, Any]:
        """Return the body to send: defaults new fields have are left out, as old clients do."""
        body = self.model_dump()
        if body["server_vectorization"] == "sync":
            del body["server_vectorization"]
        if not body["pool"]:
            del body["pool"]
        return body


class MakeReply(_Model):
    """What a client needs to stand in for the environments it asked for."""

    observation_space: dict[str, Any]
    action_space: dict[str, Any]
    metadata: dict[str, Any]
    render_mode: str | None
    max_episode_steps: int | None
    reward_threshold: float | None
    nondeterministic: bool
    autoreset_mode: AutoresetModeName | None = None
    """The mode a native vector env runs (sent only for ``vector_entry_point`` sessions)."""
    info_form: InfoForm = "merges"
    """How STEP and RESET replies carry infos (``vector``: one vector-merged dict)."""
    concurrent_steps: int = 0
    """Pool sessions: the most envs the server steps at once on worker threads (0: inline)."""
    step_timeout: float | None = None
    """Pool sessions: the operator's default deadline of one step, in seconds."""
    step_isolation: StepIsolation = "none"
    """Pool sessions: ``process`` when each env runs in a child process the server can kill."""

    def wire(self) -> dict[str, Any]:
        """Return the body to send: fields at their defaults are left out, as old servers do."""
        return self.model_dump(exclude_defaults=True)


class ResetRequest(_Request):
    """Reset with a seed (an int, one per env, or none) and options."""

    seed: int | list[int | None] | None = None
    options: dict[str, Any] | None = None


_ATTR_ACCESSORS = frozenset({"get_wrapper_attr", "set_wrapper_attr", "has_wrapper_attr"})


def _public_name(name: str) -> str:
    if not name or name.startswith("_"):
        raise ValueError(f"attribute name {name!r} refused: names starting with '_' are private")
    return name


class CallRequest(_Request):
    """Call an env method (or read an attribute) by name on every env of the session."""

    name: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    _check_name = field_validator("name")(_public_name)

    @model_validator(mode="after")
    def _no_private_by_accessor(self) -> CallRequest:
        # get_wrapper_attr("_x") would reach what the name check refuses.
        if self.name in _ATTR_ACCESSORS:
            for value in [*self.args[:1], self.kwargs.get("name")]:
                if isinstance(value, str):
                    _public_name(value)
        return self


class AttrRequest(_Request):
    """Read an attribute of every env of the session."""

    name: str

    _check_name = field_validator("name")(_public_name)


class SetAttrRequest(_Request):
    """Set an attribute: ``values`` holds one value per env when ``per_env`` is true."""

    name: str
    values: Any
    per_env: bool = False

    _check_name = field_validator("name")(_public_name)


def _check_timeout(value: float | None) -> float | None:
    if value is not None and not (0.0 < value <= 86400.0):
        raise ValueError(f"timeout must be in (0, 86400] seconds or nil, got {value!r}")
    return value


class PoolSendRequest(_Request):
    """Step the envs ``env_ids`` of a pool session with ``actions`` (a batch of as many).

    ``env_ids`` is an int ndarray or an array of ints; its checks against the session (range,
    duplicates, envs in flight) are the host's. ``timeout`` is the deadline of each step in
    seconds (nil: the operator's default for the spec).
    """

    env_ids: Any
    actions: Any
    timeout: float | None = None

    _check_timeout = field_validator("timeout")(_check_timeout)


class PoolResetRequest(_Request):
    """Reset the envs ``env_ids`` of a pool session (nil: all), as many results as envs.

    ``seed``: nil, an int ``s`` (env ``env_ids[j]`` gets ``s + j``) or one per env.
    """

    env_ids: Any = None
    seed: int | list[int | None] | None = None
    options: dict[str, Any] | None = None
    timeout: float | None = None

    _check_timeout = field_validator("timeout")(_check_timeout)


class ErrorBody(_Model):
    """Body of an error reply."""

    type: str
    message: str
    traceback: str | None = None
    details: dict[str, Any] | None = None


def parse_request(message: Any) -> tuple[Op, int, Any]:
    """Split a decoded request into opcode, request id and body.

    Raises:
        DecodeError: the message is not ``[op, request_id, body]`` with a known op.

    """
    if not (isinstance(message, list) and len(message) == 3):
        raise DecodeError("a request must be an array [op, request_id, body]")
    op, request_id, body = message
    if type(request_id) is not int or request_id < 1:
        raise DecodeError(f"request id must be a positive integer, got {request_id!r}")
    if type(op) is not int:
        raise DecodeError(f"op must be an integer, got {type(op).__name__}")
    try:
        return Op(op), request_id, body
    except ValueError as exc:
        raise DecodeError(f"unknown op {op!r}") from exc


def parse_reply(message: Any) -> tuple[Status, int, Any]:
    """Split a decoded reply into status, request id and body.

    Raises:
        DecodeError: the message is not ``[status, request_id, body]``.

    """
    if not (isinstance(message, list) and len(message) == 3):
        raise DecodeError("a reply must be an array [status, request_id, body]")
    status, request_id, body = message
    if type(status) is not int or type(request_id) is not int or request_id < 0:
        raise DecodeError(f"invalid reply header {status!r}, {request_id!r}")
    try:
        return Status(status), request_id, body
    except ValueError as exc:
        raise DecodeError(f"unknown reply status {status!r}") from exc


def parse_body(model: type[_ModelT], body: Any) -> _ModelT:
    """Validate a control message body against ``model``.

    Raises:
        DecodeError: the body does not match; the text lists each field's problem.

    """
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise DecodeError(f"{model.__name__} body must be a map, got {type(body).__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in exc.errors()
        )
        raise DecodeError(f"invalid {model.__name__}: {problems}") from exc
