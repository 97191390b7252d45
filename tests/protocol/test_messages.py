"""Messages: envelopes and control bodies, validated into DecodeError with the field named."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openenv_gym.errors import DecodeError
from openenv_gym.protocol.codec import decode, encode
from openenv_gym.protocol.messages import (
    POOL_EVENT,
    PROTOCOL_VERSION,
    REQUEST_BOUNDS,
    AttrRequest,
    CallRequest,
    Hello,
    MakeRequest,
    Op,
    ResetRequest,
    SetAttrRequest,
    Status,
    parse_body,
    parse_reply,
    parse_request,
    peek_op,
    request_bound,
)

PROPERTY = settings(max_examples=200, deadline=None)


def assert_decode_error(call: Any, *args: Any, names: str | None = None) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        call(*args)
    assert isinstance(info.value, ValueError)
    if names is not None:
        assert names in str(info.value), f"{names!r} not in {info.value}"
    return info.value


# --------------------------------------------------------------------------- envelopes


def test_messages_opcodes_and_statuses_match_spec() -> None:
    assert PROTOCOL_VERSION == 1
    assert [op.value for op in Op] == list(range(12))
    assert [op.name for op in Op] == [
        "HELLO",
        "MAKE",
        "RESET",
        "STEP",
        "RENDER",
        "CALL",
        "GET_ATTR",
        "SET_ATTR",
        "STATE",
        "CLOSE",
        "POOL_SEND",
        "POOL_RESET",
    ]
    assert (Status.OK, Status.ERROR) == (0, 1)
    assert POOL_EVENT == 2 and POOL_EVENT not in set(Status)  # pushed, never a reply status


@pytest.mark.parametrize("op", list(Op), ids=lambda op: op.name)
def test_messages_parse_request_accepts_every_op(op: Op) -> None:
    body = {"x": (1, np.arange(2))}
    parsed_op, request_id, parsed_body = parse_request(decode(encode([int(op), 7, body])))
    assert parsed_op is op and type(parsed_op) is Op
    assert request_id == 7 and type(request_id) is int
    assert parsed_body["x"][0] == 1 and type(parsed_body["x"]) is tuple


@PROPERTY
@given(
    st.sampled_from(list(Op)),
    st.integers(1, 2**64 - 1),
    st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(),
)
def test_messages_parse_request_roundtrips_through_codec(
    op: Op, request_id: int, body: Any
) -> None:
    assert parse_request(decode(encode([int(op), request_id, body]))) == (op, request_id, body)


@pytest.mark.parametrize(
    "message",
    [
        None,
        {},
        {"op": 0},
        [],
        [0, 1],
        [0, 1, None, None],
        (0, 1, None),
        "0 1 none",
        b"\x93\x00\x01\xc0",
    ],
    ids=repr,
)
def test_messages_parse_request_wrong_shape_raises_decode_error(message: Any) -> None:
    assert_decode_error(parse_request, message, names="[op, request_id, body]")


@pytest.mark.parametrize("op", [12, 13, -1, 255, 2**63], ids=repr)
def test_messages_parse_request_unknown_op_raises_decode_error(op: int) -> None:
    assert_decode_error(parse_request, [op, 1, None], names="unknown op")


@pytest.mark.parametrize("op", [True, False, 1.0, "1", None, [1], np.int64(1)], ids=repr)
def test_messages_parse_request_non_int_op_raises_decode_error(op: Any) -> None:
    assert_decode_error(parse_request, [op, 1, None], names="op")


@pytest.mark.parametrize(
    "request_id", [True, False, 1.0, "1", None, [1], (1,), np.int64(1), 0, -1], ids=repr
)
def test_messages_parse_request_invalid_id_raises_decode_error(request_id: Any) -> None:
    assert_decode_error(parse_request, [0, request_id, None], names="request id")


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.name)
def test_messages_parse_reply_accepts_both_statuses(status: Status) -> None:
    parsed_status, request_id, body = parse_reply(decode(encode([int(status), 3, {"k": "v"}])))
    assert parsed_status is status and request_id == 3 and body == {"k": "v"}


def test_messages_parse_reply_accepts_id_zero_for_unparsable_requests() -> None:
    status, request_id, body = parse_reply([1, 0, {"type": "x", "message": "y"}])
    assert status is Status.ERROR and request_id == 0 and body["message"] == "y"


@pytest.mark.parametrize(
    "message", [None, {}, [], [0, 1], [0, 1, None, None], (0, 1, None)], ids=repr
)
def test_messages_parse_reply_wrong_shape_raises_decode_error(message: Any) -> None:
    assert_decode_error(parse_reply, message, names="[status, request_id, body]")


@pytest.mark.parametrize("status", [2, -1, 3.5, "0", None, [0]], ids=repr)
def test_messages_parse_reply_unknown_status_raises_decode_error(status: Any) -> None:
    assert_decode_error(parse_reply, [status, 1, None])


@pytest.mark.parametrize("request_id", [None, [1], "x", {}], ids=repr)
def test_messages_parse_reply_unusable_id_raises_decode_error(request_id: Any) -> None:
    assert_decode_error(parse_reply, [0, request_id, None])


@pytest.mark.parametrize("request_id", ["1", 1.0, 2.7, True, np.int64(1)], ids=repr)
def test_messages_parse_reply_non_int_id_raises_decode_error(request_id: Any) -> None:
    assert_decode_error(parse_reply, [0, request_id, None])


@pytest.mark.parametrize("status", [True, False, 1.0], ids=repr)
def test_messages_parse_reply_non_int_status_raises_decode_error(status: Any) -> None:
    assert_decode_error(parse_reply, [status, 1, None])


# --------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    ("model", "body", "expected"),
    [
        (Hello, {"protocol_version": 1}, {"protocol_version": 1, "client": ""}),
        (Hello, {"protocol_version": 2, "client": "c"}, {"protocol_version": 2, "client": "c"}),
        (
            MakeRequest,
            {"env_id": "CartPole-v1"},
            {"env_id": "CartPole-v1", "num_envs": 1, "kwargs": {}, "autoreset_mode": None},
        ),
        (
            MakeRequest,
            {"env_id": "m:E", "num_envs": 4, "kwargs": {"a": (1,)}, "autoreset_mode": "SameStep"},
            {"env_id": "m:E", "num_envs": 4, "kwargs": {"a": (1,)}, "autoreset_mode": "SameStep"},
        ),
        (MakeRequest, {"env_id": "x" * 512}, {"env_id": "x" * 512}),
        (ResetRequest, None, {"seed": None, "options": None}),
        (ResetRequest, {}, {"seed": None, "options": None}),
        (ResetRequest, {"seed": 3}, {"seed": 3}),
        (ResetRequest, {"seed": [1, None, 2]}, {"seed": [1, None, 2]}),
        (ResetRequest, {"options": {"reset_mask": np.ones(2, bool)}}, {"seed": None}),
        (CallRequest, {"name": "render"}, {"name": "render", "args": [], "kwargs": {}}),
        (CallRequest, {"name": "f", "args": [1, "a"], "kwargs": {"k": 2}}, {"args": [1, "a"]}),
        (CallRequest, {"name": "get_wrapper_attr", "args": ["spec"]}, {"args": ["spec"]}),
        (AttrRequest, {"name": "spec"}, {"name": "spec"}),
        (AttrRequest, {"name": "a_b_"}, {"name": "a_b_"}),
        (SetAttrRequest, {"name": "x", "values": [1, 2]}, {"values": [1, 2], "per_env": False}),
        (SetAttrRequest, {"name": "x", "values": None, "per_env": True}, {"per_env": True}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else repr(v)[:40],
)
def test_messages_parse_body_accepts_valid_bodies(
    model: type, body: Any, expected: dict[str, Any]
) -> None:
    parsed = parse_body(model, body)
    assert type(parsed) is model
    dumped = parsed.model_dump()
    for key, value in expected.items():
        assert dumped[key] == value, key


def test_messages_parse_body_keeps_exact_value_types() -> None:
    body = decode(encode({"name": "f", "args": [(1, 2), np.int32(3)], "kwargs": {"a": np.ones(2)}}))
    parsed = parse_body(CallRequest, body)
    assert type(parsed.args[0]) is tuple and type(parsed.args[1]) is np.int32
    assert isinstance(parsed.kwargs["a"], np.ndarray)


def test_messages_parse_body_results_are_frozen() -> None:
    parsed = parse_body(MakeRequest, {"env_id": "x"})
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError on frozen models
        parsed.env_id = "y"  # type: ignore[misc]
    assert parsed.env_id == "x"


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (Hello, {"protocol_version": 1, "extra": 2}, "extra"),
        (MakeRequest, {"env_id": "x", "seed": 1}, "seed"),
        (ResetRequest, {"seed": 1, "mask": None}, "mask"),
        (CallRequest, {"name": "f", "fn": "g"}, "fn"),
        (AttrRequest, {"name": "a", "default": None}, "default"),
        (SetAttrRequest, {"name": "a", "values": 1, "value": 1}, "value"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else repr(v)[:30],
)
def test_messages_parse_body_extra_field_raises_decode_error(
    model: type, body: dict[str, Any], field: str
) -> None:
    error = assert_decode_error(parse_body, model, body, names=field)
    assert model.__name__ in str(error)
    assert "xtra" in str(error)  # "Extra inputs are not permitted"


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (CallRequest, {"name": "_private"}),
        (CallRequest, {"name": "__class__"}),
        (CallRequest, {"name": "__init__", "args": []}),
        (AttrRequest, {"name": "_np_random"}),
        (AttrRequest, {"name": "__dict__"}),
        (SetAttrRequest, {"name": "_x", "values": 1}),
        (SetAttrRequest, {"name": "__class__", "values": 1}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else v["name"],
)
def test_messages_parse_body_private_name_raises_decode_error(
    model: type, body: dict[str, Any]
) -> None:
    error = assert_decode_error(parse_body, model, body, names="name")
    assert body["name"] in str(error)
    assert "private" in str(error)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "get_wrapper_attr", "args": ["_np_random"]},
        {"name": "set_wrapper_attr", "args": ["_x", 1]},
        {"name": "has_wrapper_attr", "kwargs": {"name": "__dict__"}},
    ],
    ids=lambda b: b["name"],
)
def test_messages_parse_body_private_name_via_wrapper_accessor_raises_decode_error(
    body: dict[str, Any],
) -> None:
    assert_decode_error(parse_body, CallRequest, body, names="private")


@pytest.mark.parametrize(
    "model", [CallRequest, AttrRequest, SetAttrRequest], ids=lambda m: m.__name__
)
def test_messages_parse_body_empty_name_raises_decode_error(model: type) -> None:
    assert_decode_error(
        parse_body,
        model,
        {"name": "", "values": 1} if model is SetAttrRequest else {"name": ""},
        names="name",
    )


@pytest.mark.parametrize("num_envs", [0, -1, -(2**63)], ids=repr)
def test_messages_parse_body_num_envs_below_one_raises_decode_error(num_envs: int) -> None:
    error = assert_decode_error(
        parse_body, MakeRequest, {"env_id": "x", "num_envs": num_envs}, names="num_envs"
    )
    assert "greater than or equal to 1" in str(error)


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (Hello, {"protocol_version": "1"}, "protocol_version"),
        (Hello, {"protocol_version": 1.0}, "protocol_version"),
        (Hello, {"protocol_version": True}, "protocol_version"),
        (Hello, {"protocol_version": None}, "protocol_version"),
        (Hello, {"protocol_version": np.int64(1)}, "protocol_version"),
        (Hello, {"protocol_version": 1, "client": 5}, "client"),
        (MakeRequest, {"env_id": 5}, "env_id"),
        (MakeRequest, {"env_id": ["CartPole-v1"]}, "env_id"),
        (MakeRequest, {"env_id": b"CartPole-v1"}, "env_id"),
        (MakeRequest, {"env_id": ""}, "env_id"),
        (MakeRequest, {"env_id": "x" * 513}, "env_id"),
        (MakeRequest, {"env_id": "x", "num_envs": "2"}, "num_envs"),
        (MakeRequest, {"env_id": "x", "num_envs": 2.0}, "num_envs"),
        (MakeRequest, {"env_id": "x", "num_envs": None}, "num_envs"),
        (MakeRequest, {"env_id": "x", "kwargs": [1]}, "kwargs"),
        (MakeRequest, {"env_id": "x", "kwargs": {1: 2}}, "kwargs"),
        (MakeRequest, {"env_id": "x", "autoreset_mode": "next_step"}, "autoreset_mode"),
        (MakeRequest, {"env_id": "x", "autoreset_mode": 0}, "autoreset_mode"),
        (ResetRequest, {"seed": "3"}, "seed"),
        (ResetRequest, {"seed": 1.5}, "seed"),
        (ResetRequest, {"seed": [1.5]}, "seed"),
        (ResetRequest, {"seed": {"a": 1}}, "seed"),
        (ResetRequest, {"options": [1]}, "options"),
        (ResetRequest, {"options": {1: 2}}, "options"),
        (CallRequest, {"name": 5}, "name"),
        (CallRequest, {"name": None}, "name"),
        (CallRequest, {"name": "f", "args": {"a": 1}}, "args"),
        (CallRequest, {"name": "f", "args": "ab"}, "args"),
        (CallRequest, {"name": "f", "kwargs": [1]}, "kwargs"),
        (AttrRequest, {"name": ["spec"]}, "name"),
        (SetAttrRequest, {"name": "x", "values": 1, "per_env": "yes"}, "per_env"),
        (SetAttrRequest, {"name": "x", "values": 1, "per_env": 1}, "per_env"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else repr(v)[:30],
)
def test_messages_parse_body_wrong_type_raises_decode_error(
    model: type, body: dict[str, Any], field: str
) -> None:
    error = assert_decode_error(parse_body, model, body, names=field)
    assert model.__name__ in str(error)


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (Hello, {}, "protocol_version"),
        (Hello, None, "protocol_version"),
        (MakeRequest, {"num_envs": 2}, "env_id"),
        (CallRequest, {"args": []}, "name"),
        (AttrRequest, {}, "name"),
        (SetAttrRequest, {"name": "x"}, "values"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else repr(v)[:30],
)
def test_messages_parse_body_missing_field_raises_decode_error(
    model: type, body: Any, field: str
) -> None:
    error = assert_decode_error(parse_body, model, body, names=field)
    assert "required" in str(error)


@pytest.mark.parametrize("body", [[1], "x", 5, (1,), b"{}"], ids=repr)
def test_messages_parse_body_non_map_raises_decode_error(body: Any) -> None:
    assert_decode_error(parse_body, Hello, body, names="must be a map")


def test_messages_parse_body_lists_every_problem() -> None:
    error = assert_decode_error(parse_body, MakeRequest, {"env_id": "", "num_envs": 0, "bogus": 1})
    for field in ("env_id", "num_envs", "bogus"):
        assert field in str(error)


@PROPERTY
@given(
    st.dictionaries(
        st.text(max_size=12),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text()
        | st.lists(st.integers()),
        max_size=4,
    ),
    st.sampled_from([Hello, MakeRequest, ResetRequest, CallRequest, AttrRequest, SetAttrRequest]),
)
def test_messages_parse_body_arbitrary_map_raises_only_decode_error(
    body: dict[str, Any], model: type
) -> None:
    try:
        parsed = parse_body(model, body)
    except DecodeError:
        return
    assert type(parsed) is model
    name = getattr(parsed, "name", "x")
    assert name and not name.startswith("_")


# --------------------------------------------------------------------------- request bounds


@PROPERTY
@given(
    st.sampled_from(list(Op)), st.integers(1, 2**63 - 1), st.none() | st.integers(-(2**63), 2**63)
)
def test_messages_peek_op_reads_the_op_of_every_encoded_request(
    op: Op, request_id: int, body: Any
) -> None:
    assert peek_op(encode([int(op), request_id, body])) == op


@pytest.mark.parametrize(
    "frame",
    [b"", b"\x93", b"\x92\x03\x01", b"\xdc\x00\x03\x03\x01\xc0", b"\x93\xcc\x03\x01\xc0", b"\x80"],
    ids=["empty", "truncated", "two elements", "array16", "uint8 op", "map"],
)
def test_messages_peek_op_gives_none_for_frames_it_cannot_read(frame: bytes) -> None:
    assert peek_op(frame) is None


def test_messages_every_op_has_a_bound() -> None:
    assert set(REQUEST_BOUNDS) == set(Op)


def test_messages_request_bound_before_make_is_small_whatever_the_message_limit() -> None:
    assert request_bound(Op.HELLO, max_message_bytes=1 << 30, num_envs=0) == (4096, 256)
    assert request_bound(Op.MAKE, max_message_bytes=1 << 30, num_envs=0)[0] == 1 << 20


def test_messages_request_bound_never_exceeds_the_message_limit() -> None:
    for op in Op:
        assert request_bound(op, max_message_bytes=1000, num_envs=4)[0] <= 1000


def test_messages_request_bound_of_step_grows_with_the_envs() -> None:
    one = request_bound(Op.STEP, max_message_bytes=1 << 24, num_envs=1)
    many = request_bound(Op.STEP, max_message_bytes=1 << 24, num_envs=1025)
    assert one[0] == many[0] == 1 << 24
    assert many[1] - one[1] == 1024 * REQUEST_BOUNDS[Op.STEP].values_per_env > 0
