"""JSON schemas (OpenEnv's pydantic models) <-> gymnasium spaces, with value converters.

From a schema (``Model.model_json_schema()``) :func:`field_from_schema` derives a space and the
two conversions between its values and JSON values:

=====================================  ==============================================
JSON schema                            gymnasium space
=====================================  ==============================================
``string``                             ``Text`` over printable ASCII (``maxLength`` or 4096)
``string`` with ``enum``               ``Discrete(len(enum))``, index <-> value
``boolean``                            ``Discrete(2)``
``integer`` bounded both ways          ``Discrete(max - min + 1, start=min)``
``integer`` / ``number`` otherwise     ``Box`` of shape ``()``, int64 / float64, bounds kept
``array`` of numbers, fixed length     ``Box`` of shape ``(n,)``
``array`` otherwise                    ``Sequence`` of the item's space
``object`` with properties (models)    ``Dict`` in property order
anything else (``Any``, free maps)     ``Text`` holding the JSON text (the documented fallback)
=====================================  ==============================================

``Optional[X]`` maps to X's space; a JSON ``null`` arrives as that space's zero value (``""``,
the lowest integer, ``0.0``...). :func:`schema_from_space` goes the other way for hosting
gymnasium envs behind OpenEnv's protocol; their values convert with gymnasium's own
``to_jsonable``/``from_jsonable``.
"""

from __future__ import annotations

import dataclasses
import json
import string
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["Field", "field_from_schema", "schema_from_space"]

TEXT_CHARSET = string.printable
DEFAULT_MAX_TEXT = 4096
JSON_FALLBACK_MAX = 65536
_INT64 = np.iinfo(np.int64)


@dataclasses.dataclass(frozen=True)
class Field:
    """A space and the conversions of its values from and to JSON values."""

    space: spaces.Space[Any]
    from_json: Callable[[Any], Any]
    to_json: Callable[[Any], Any]


def field_from_schema(
    schema: Mapping[str, Any],
    defs: Mapping[str, Any] | None = None,
    *,
    exclude: frozenset[str] = frozenset(),
) -> Field:
    """Derive the space of values described by ``schema`` (see the module table).

    Args:
        schema: a JSON schema (a pydantic model's ``model_json_schema()``).
        defs: the ``$defs`` that ``$ref`` s point into (default: the schema's own).
        exclude: top-level properties to leave out (e.g. ``reward``, ``done``, ``metadata``).

    """
    defs = schema.get("$defs", {}) if defs is None else defs
    schema = _resolve(schema, defs)
    if "enum" in schema:
        return _enum(list(schema["enum"]))
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        return _object(schema, defs, exclude)
    builder = _BUILDERS.get(kind) if isinstance(kind, str) else None
    return builder(schema, defs) if builder is not None else _json_text()


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow ``$ref`` and unwrap ``Optional`` (``anyOf`` with ``null``)."""
    while True:
        if "$ref" in schema:
            schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
            continue
        options = schema.get("anyOf") or schema.get("oneOf")
        if options:
            concrete = [option for option in options if option.get("type") != "null"]
            if len(concrete) == 1:
                schema = concrete[0]
                continue
        return schema


def _object(schema: Mapping[str, Any], defs: Mapping[str, Any], exclude: frozenset[str]) -> Field:
    fields = {
        name: field_from_schema(sub, defs)
        for name, sub in schema["properties"].items()
        if name not in exclude
    }
    space = spaces.Dict([(name, field.space) for name, field in fields.items()])

    def from_json(value: Any) -> dict[str, Any]:
        value = value or {}
        return {name: field.from_json(value.get(name)) for name, field in fields.items()}

    def to_json(value: Mapping[str, Any]) -> dict[str, Any]:
        return {name: field.to_json(value[name]) for name, field in fields.items()}

    return Field(space, from_json, to_json)


def _enum(values: list[Any]) -> Field:
    index = {json.dumps(value): i for i, value in enumerate(values)}

    def from_json(value: Any) -> Any:
        if value is None and "null" not in index:  # Optional[enum] unset: the zero value
            return np.int64(0)
        if json.dumps(value) not in index:
            raise ValueError(f"{value!r} is not one of {values}")
        return np.int64(index[json.dumps(value)])

    return Field(spaces.Discrete(len(values)), from_json, lambda value: values[int(value)])


def _string(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Field:
    space = spaces.Text(
        int(schema.get("maxLength", DEFAULT_MAX_TEXT)),
        min_length=int(schema.get("minLength", 0)),
        charset=TEXT_CHARSET,
    )
    return Field(space, lambda value: "" if value is None else str(value), str)


def _boolean(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Field:
    return Field(spaces.Discrete(2), lambda value: np.int64(bool(value)), lambda v: bool(v))


def _bounds(schema: Mapping[str, Any], step: float) -> tuple[float | None, float | None]:
    low = schema.get("minimum")
    if low is None and "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + step
    high = schema.get("maximum")
    if high is None and "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - step
    return low, high


def _integer(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Field:
    low, high = _bounds(schema, 1)
    if low is not None and high is not None and 0 <= high - low < 2**31:
        space: spaces.Space[Any] = spaces.Discrete(int(high - low + 1), start=int(low))
        return Field(space, lambda value: np.int64(int(low if value is None else value)), int)
    lo = _INT64.min if low is None else int(low)
    hi = _INT64.max if high is None else int(high)
    box = spaces.Box(lo, hi, (), np.int64)
    return Field(
        box,
        lambda value: np.asarray(min(max(lo, 0), hi) if value is None else int(value), np.int64),
        lambda value: int(value),
    )


def _number(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Field:
    low, high = _bounds(schema, 0.0)
    box = spaces.Box(
        -np.inf if low is None else float(low),
        np.inf if high is None else float(high),
        (),
        np.float64,
    )
    zero = min(max(0.0, -np.inf if low is None else float(low)), np.inf if high is None else high)
    return Field(
        box,
        lambda value: np.asarray(zero if value is None else float(value), dtype=np.float64),
        lambda value: float(value),
    )


def _array(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Field:
    items = _resolve(schema.get("items", {}), defs)
    length = schema.get("minItems")
    if (
        items.get("type") in ("number", "integer")
        and length is not None
        and length == schema.get("maxItems")
    ):
        floats = items["type"] == "number"
        dtype = np.float64 if floats else np.int64
        low, high = _bounds(items, 0.0 if floats else 1)
        lowest, highest = (-np.inf, np.inf) if floats else (_INT64.min, _INT64.max)
        box = spaces.Box(
            lowest if low is None else low, highest if high is None else high, (length,), dtype
        )
        return Field(
            box,
            lambda value: np.zeros(length, dtype) if value is None else np.asarray(value, dtype),
            lambda value: np.asarray(value).tolist(),
        )
    item = field_from_schema(items, defs)
    return Field(
        spaces.Sequence(item.space),
        lambda value: tuple(item.from_json(x) for x in value or ()),
        lambda value: [item.to_json(x) for x in value],
    )


def _json_text() -> Field:
    space = spaces.Text(JSON_FALLBACK_MAX, min_length=0, charset=TEXT_CHARSET)
    return Field(space, lambda value: json.dumps(value, sort_keys=True), json.loads)


_BUILDERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], Field]] = {
    "string": _string,
    "boolean": _boolean,
    "integer": _integer,
    "number": _number,
    "array": _array,
}


def schema_from_space(space: spaces.Space[Any]) -> dict[str, Any]:
    """Describe the JSON form (``space.to_jsonable``) of a space's values as a JSON schema."""
    if isinstance(space, spaces.Discrete):
        start = int(space.start)
        return {"type": "integer", "minimum": start, "maximum": start + int(space.n) - 1}
    if isinstance(space, spaces.Box):
        kind = "integer" if np.issubdtype(space.dtype, np.integer) else "number"
        item: dict[str, Any] = {"type": kind}
        for key, bound in (("minimum", space.low), ("maximum", space.high)):
            if bound.size and np.all(np.isfinite(bound)) and np.all(bound == bound.flat[0]):
                item[key] = bound.flat[0].item()  # a uniform finite bound: state it
        for size in reversed(space.shape):
            item = {"type": "array", "items": item, "minItems": size, "maxItems": size}
        return item
    if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        return {"type": "array", "items": {"type": "integer"}}
    if isinstance(space, spaces.Text):
        return {"type": "string", "minLength": space.min_length, "maxLength": space.max_length}
    if isinstance(space, spaces.Dict):
        return {
            "type": "object",
            "properties": {key: schema_from_space(sub) for key, sub in space.items()},
            "required": list(space.keys()),
        }
    if isinstance(space, spaces.Tuple):
        items = [schema_from_space(sub) for sub in space]
        return {
            "type": "array",
            "prefixItems": items,
            "minItems": len(items),
            "maxItems": len(items),
        }
    return {}  # Sequence, Graph, OneOf: any JSON value (gymnasium's to_jsonable form)
