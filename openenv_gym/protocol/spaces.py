"""Gymnasium space definitions to plain data and back.

A space travels once, at session start, as a dict ``{"type": <name>, ...fields}`` that the codec
can carry (arrays stay arrays, so ``Box`` bounds keep their dtype and ``±inf``). Decoding gives a
space equal (``==``) to the original with the same ``flatten`` order: ``Dict`` keeps its key
order, ``Text`` its ordered character set.

Only the exact types below are carried. A subclass may change sampling or containment in ways
plain data cannot express, so it is refused with :class:`UnsupportedSpaceError`, at handshake.

Samples need no help from this module: the codec keeps their exact Python and numpy types.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from openenv_gym.errors import DecodeError, UnsupportedSpaceError
from openenv_gym.protocol.codec import safe_dtype

__all__ = ["space_from_data", "space_to_data"]

SpaceData = dict[str, Any]

MAX_SPACE_DEPTH = 64
"""How deeply composite spaces may nest in a description (a bound, not Python's stack, decides)."""

_depth: contextvars.ContextVar[int] = contextvars.ContextVar("space_depth", default=0)


def _box_to(space: spaces.Box) -> SpaceData:
    return {"low": space.low, "high": space.high, "dtype": space.dtype.str}


def _box_from(data: SpaceData) -> spaces.Box:
    return spaces.Box(low=data["low"], high=data["high"], dtype=safe_dtype(data["dtype"]))


def _discrete_to(space: spaces.Discrete) -> SpaceData:
    return {"n": int(space.n), "start": int(space.start), "dtype": space.dtype.str}


def _discrete_from(data: SpaceData) -> spaces.Discrete:
    dtype: Any = safe_dtype(data["dtype"])
    return spaces.Discrete(data["n"], start=data["start"], dtype=dtype)


def _multi_discrete_to(space: spaces.MultiDiscrete) -> SpaceData:
    return {"nvec": space.nvec, "start": space.start, "dtype": space.dtype.str}


def _multi_discrete_from(data: SpaceData) -> spaces.MultiDiscrete:
    dtype: Any = safe_dtype(data["dtype"])
    return spaces.MultiDiscrete(data["nvec"], dtype=dtype, start=data["start"])


def _multi_binary_to(space: spaces.MultiBinary) -> SpaceData:
    return {"n": np.asarray(space.n).tolist()}


def _multi_binary_from(data: SpaceData) -> spaces.MultiBinary:
    return spaces.MultiBinary(data["n"])


def _text_to(space: spaces.Text) -> SpaceData:
    return {
        "max_length": space.max_length,
        "min_length": space.min_length,
        "charset": "".join(space.character_list),
    }


def _text_from(data: SpaceData) -> spaces.Text:
    return spaces.Text(data["max_length"], min_length=data["min_length"], charset=data["charset"])


def _tuple_to(space: spaces.Tuple[Any]) -> SpaceData:
    return {"spaces": [space_to_data(sub) for sub in space.spaces]}


def _tuple_from(data: SpaceData) -> spaces.Tuple[Any]:
    return spaces.Tuple([space_from_data(sub) for sub in data["spaces"]])


def _dict_to(space: spaces.Dict) -> SpaceData:
    return {"spaces": [[key, space_to_data(sub)] for key, sub in space.spaces.items()]}


def _dict_from(data: SpaceData) -> spaces.Dict:
    # A sequence of pairs keeps the order as sent (a plain mapping would be sorted).
    return spaces.Dict([(key, space_from_data(sub)) for key, sub in data["spaces"]])


def _sequence_to(space: spaces.Sequence) -> SpaceData:
    return {"space": space_to_data(space.feature_space), "stack": space.stack}


def _sequence_from(data: SpaceData) -> spaces.Sequence:
    return spaces.Sequence(space_from_data(data["space"]), stack=data["stack"])


def _graph_to(space: spaces.Graph) -> SpaceData:
    edge = None if space.edge_space is None else space_to_data(space.edge_space)
    return {"node_space": space_to_data(space.node_space), "edge_space": edge}


def _graph_from(data: SpaceData) -> spaces.Graph:
    edge = None if data["edge_space"] is None else space_from_data(data["edge_space"])
    node = space_from_data(data["node_space"])
    if not isinstance(node, (spaces.Box, spaces.Discrete)) or not isinstance(
        edge, (spaces.Box, spaces.Discrete, type(None))
    ):
        raise DecodeError("graph node and edge spaces must be Box or Discrete")
    return spaces.Graph(node_space=node, edge_space=edge)


def _one_of_to(space: spaces.OneOf[Any]) -> SpaceData:
    return {"spaces": [space_to_data(sub) for sub in space.spaces]}


def _one_of_from(data: SpaceData) -> spaces.OneOf[Any]:
    return spaces.OneOf([space_from_data(sub) for sub in data["spaces"]])


_CODECS: dict[type[spaces.Space[Any]], tuple[Callable[[Any], SpaceData], Callable[..., Any]]] = {
    spaces.Box: (_box_to, _box_from),
    spaces.Discrete: (_discrete_to, _discrete_from),
    spaces.MultiDiscrete: (_multi_discrete_to, _multi_discrete_from),
    spaces.MultiBinary: (_multi_binary_to, _multi_binary_from),
    spaces.Text: (_text_to, _text_from),
    spaces.Tuple: (_tuple_to, _tuple_from),
    spaces.Dict: (_dict_to, _dict_from),
    spaces.Sequence: (_sequence_to, _sequence_from),
    spaces.Graph: (_graph_to, _graph_from),
    spaces.OneOf: (_one_of_to, _one_of_from),
}
_BY_NAME = {cls.__name__: decode for cls, (_, decode) in _CODECS.items()}


def space_to_data(space: spaces.Space[Any]) -> SpaceData:
    """Describe ``space`` as plain data for the wire.

    Args:
        space: a gymnasium space of one of the exact built-in types.

    Returns:
        ``{"type": <class name>, ...}``, nested for composite spaces.

    Raises:
        UnsupportedSpaceError: ``space`` (or a space inside it) is of another type.

    """
    codec = _CODECS.get(type(space))
    if codec is None:
        raise UnsupportedSpaceError(
            f"space type {type(space).__module__}.{type(space).__qualname__} cannot be sent; "
            f"supported: {', '.join(sorted(_BY_NAME))}"
        )
    return {"type": type(space).__name__, **codec[0](space)}


def space_from_data(data: Any) -> spaces.Space[Any]:
    """Rebuild a space from :func:`space_to_data`'s output.

    Args:
        data: the plain data.

    Returns:
        A space equal to the one described.

    Raises:
        DecodeError: the data does not describe a supported space.

    """
    kind = data.get("type") if isinstance(data, dict) else type(data).__name__
    if not isinstance(kind, str) or kind not in _BY_NAME:
        raise DecodeError(f"not a space description: {kind!r}")
    depth = _depth.get()
    if depth >= MAX_SPACE_DEPTH:
        raise DecodeError(f"space description nested deeper than {MAX_SPACE_DEPTH}")
    token = _depth.set(depth + 1)
    try:
        return _BY_NAME[data["type"]](data)  # type: ignore[no-any-return]
    except DecodeError:
        raise
    except (KeyError, TypeError, ValueError, AssertionError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"invalid {data['type']} space description: {exc!r}") from exc
    finally:
        _depth.reset(token)
