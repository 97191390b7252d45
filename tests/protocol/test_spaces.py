"""Space descriptions: every gymnasium space to plain data, through the codec, and back."""

from __future__ import annotations

import struct
import warnings
from typing import Any

import msgpack
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.spaces import GraphInstance
from gymnasium.spaces.utils import flatten, flatten_space
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openenv_gym.errors import DecodeError, UnsupportedSpaceError
from openenv_gym.protocol.codec import decode, encode
from openenv_gym.protocol.spaces import space_from_data, space_to_data

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- helpers


def wire(space: spaces.Space[Any]) -> spaces.Space[Any]:
    """Describe, encode, decode and rebuild a space, as the client sees it after MAKE."""
    return space_from_data(decode(encode(space_to_data(space))))


def assert_identical(expected: Any, actual: Any, path: str = "value") -> None:
    """Exact-type, bit-exact structural equality (NaN equals NaN, dict order counts)."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} is not {type(expected)}"
    if isinstance(expected, np.ndarray):
        assert actual.dtype.str == expected.dtype.str, f"{path}: dtype"
        assert actual.shape == expected.shape, f"{path}: shape"
        if expected.dtype.hasobject:
            for index in np.ndindex(expected.shape):
                assert_identical(expected[index], actual[index], f"{path}[{index}]")
        else:
            assert actual.tobytes() == expected.tobytes(), f"{path}: values"
    elif isinstance(expected, np.generic):
        assert actual.dtype.str == expected.dtype.str, f"{path}: dtype"
        assert actual.tobytes() == expected.tobytes(), f"{path}: value"
    elif isinstance(expected, float):
        assert struct.pack("<d", actual) == struct.pack("<d", expected), f"{path}: float"
    elif isinstance(expected, GraphInstance):
        for field in ("nodes", "edges", "edge_links"):
            assert_identical(getattr(expected, field), getattr(actual, field), f"{path}.{field}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: length"
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            assert_identical(left, right, f"{path}[{index}]")
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys or key order"
        for key in expected:
            assert_identical(expected[key], actual[key], f"{path}[{key!r}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def flat_space_or_error(space: spaces.Space[Any]) -> Any:
    try:
        return flatten_space(space)
    except Exception as exc:  # some spaces cannot be flattened: both sides must agree
        return type(exc)


def assert_space_roundtrip(space: spaces.Space[Any], seed: int = 0) -> spaces.Space[Any]:
    decoded = wire(space)
    assert type(decoded) is type(space)
    assert decoded == space
    assert flat_space_or_error(decoded) == flat_space_or_error(space)
    space.seed(seed)
    for _ in range(3):
        sample = space.sample()
        assert decoded.contains(sample)
        received = decode(encode(sample))
        assert_identical(sample, received)
        assert space.contains(received)
    return decoded


# --------------------------------------------------------------------------- strategies

FLOAT_DTYPES = [np.float16, np.float32, np.float64]
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
small_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


@st.composite
def boxes(draw: st.DrawFn) -> spaces.Box:
    shape = draw(small_shapes)
    kind = draw(st.sampled_from(["float", "int", "bool"]))
    if kind == "bool":
        return spaces.Box(0, 1, shape, dtype=np.bool_)
    if kind == "int":
        dtype = draw(st.sampled_from(INT_DTYPES))
        info = np.iinfo(dtype)
        low = draw(st.integers(max(info.min, -100), min(info.max, 100)))
        high = draw(st.integers(low, min(info.max, low + 1000)))
        return spaces.Box(low, high, shape, dtype=dtype)
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    low = draw(st.sampled_from([-np.inf, -10.0, -1.5, 0.0]))
    high = draw(st.sampled_from([np.inf, 0.5, 2.0, 100.0]))
    high = max(high, 0.5) if low == 0.0 else high
    if low > high:
        low, high = high, low
    return spaces.Box(low, high, shape, dtype=dtype)


@st.composite
def discretes(draw: st.DrawFn) -> spaces.Discrete:
    dtype = draw(st.sampled_from([np.int64, np.int32, np.int16]))
    return spaces.Discrete(draw(st.integers(1, 20)), start=draw(st.integers(-10, 10)), dtype=dtype)


@st.composite
def multi_discretes(draw: st.DrawFn) -> spaces.MultiDiscrete:
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple))
    size = int(np.prod(shape))
    nvec = np.array(draw(st.lists(st.integers(1, 9), min_size=size, max_size=size)))
    start = np.array(draw(st.lists(st.integers(-5, 5), min_size=size, max_size=size)))
    dtype = draw(st.sampled_from([np.int64, np.int32]))
    return spaces.MultiDiscrete(nvec.reshape(shape), dtype=dtype, start=start.reshape(shape))


multi_binaries = st.one_of(
    st.integers(1, 6), st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple)
).map(spaces.MultiBinary)


@st.composite
def texts(draw: st.DrawFn) -> spaces.Text:
    # No NUL: gymnasium's Text.sample loses it (numpy strips trailing NULs from str arrays).
    chars = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
    charset = draw(st.lists(chars, min_size=1, max_size=12, unique=True))
    min_length = draw(st.integers(0, 3))
    max_length = draw(st.integers(max(min_length, 1), 6))
    return spaces.Text(max_length, min_length=min_length, charset="".join(charset))


@st.composite
def graphs(draw: st.DrawFn) -> spaces.Graph:
    node = draw(st.one_of(boxes(), discretes()).filter(lambda s: not _is_bool_box(s)))
    edge = draw(st.one_of(st.none(), boxes(), discretes()).filter(lambda s: not _is_bool_box(s)))
    return spaces.Graph(node_space=node, edge_space=edge)


def _is_bool_box(space: Any) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.bool_


leaf_spaces = st.one_of(boxes(), discretes(), multi_discretes(), multi_binaries, texts())

key_lists = st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=4, unique=True)


def _composite(children: st.SearchStrategy[spaces.Space[Any]]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, min_size=1, max_size=3).map(spaces.Tuple),
        key_lists.flatmap(
            lambda keys: st.lists(children, min_size=len(keys), max_size=len(keys)).map(
                lambda subs: spaces.Dict(list(zip(keys, subs, strict=True)))
            )
        ),
        st.builds(lambda sub, stack: spaces.Sequence(sub, stack=stack), children, st.booleans()),
        st.lists(children, min_size=1, max_size=3).map(spaces.OneOf),
    )


any_spaces = st.recursive(st.one_of(leaf_spaces, graphs()), _composite, max_leaves=6)


# --------------------------------------------------------------------------- round trips


@PROPERTY
@given(any_spaces, st.integers(0, 2**32 - 1))
def test_spaces_roundtrip_random_nested_space(space: spaces.Space[Any], seed: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium warns about e.g. float16 precision
        assert_space_roundtrip(space, seed)


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(-np.inf, np.inf, (3,), np.float32),
        spaces.Box(np.array([0.0, -np.inf]), np.array([np.inf, 1.0]), dtype=np.float64),
        spaces.Box(-1.0, 1.0, (), np.float16),
        spaces.Box(0.0, 1.0, (), np.float32),
        spaces.Box(0, 255, (2, 2), np.uint8),
        spaces.Box(0, 2**32 - 1, (2,), np.uint32),
        spaces.Box(-5, 5, (2, 1, 2), np.int64),
        spaces.Box(-128, 127, (4,), np.int8),
        spaces.Box(0, 1, (3,), np.bool_),
        spaces.Discrete(3),
        spaces.Discrete(5, start=2),
        spaces.Discrete(5, start=-3),
        spaces.Discrete(7, start=2, dtype=np.int32),
        spaces.MultiDiscrete([2, 3, 4]),
        spaces.MultiDiscrete([[2, 3], [4, 5]], start=[[1, -1], [0, 10]]),
        spaces.MultiDiscrete([5, 5], dtype=np.int32, start=[-2, 3]),
        spaces.MultiBinary(4),
        spaces.MultiBinary((2, 3)),
        spaces.MultiBinary([1, 2, 2]),
        spaces.Text(5),
        spaces.Text(8, min_length=2, charset="zyxa"),
        spaces.Text(4, min_length=4, charset="é日本🙂"),
        spaces.Tuple([spaces.Discrete(2), spaces.Box(0, 1, (2,))]),
        spaces.Tuple([]),
        spaces.Dict([("b", spaces.Discrete(2)), ("a", spaces.Box(0, 1, (2,)))]),
        spaces.Dict({"z": spaces.Discrete(2), "a": spaces.Discrete(3)}),
        spaces.Sequence(spaces.Discrete(3), stack=True),
        spaces.Sequence(spaces.Box(0, 1, (2,)), stack=True),
        spaces.Sequence(spaces.Box(0, 1, (2,)), stack=False),
        spaces.Graph(spaces.Box(0, 1, (3,)), None),
        spaces.Graph(spaces.Discrete(3), spaces.Discrete(4)),
        spaces.Graph(spaces.Box(0, 1, (3,)), spaces.Box(-1, 1, (2,), np.float64)),
        spaces.Graph(spaces.Discrete(5, start=1), spaces.Box(0, 1, ())),
        spaces.OneOf([spaces.Discrete(2), spaces.Box(0, 1, (2,))]),
        spaces.OneOf([spaces.Text(3), spaces.Tuple([spaces.Discrete(2)])]),
        spaces.Dict(
            [
                ("seq", spaces.Sequence(spaces.Dict([("y", spaces.Discrete(2))]), stack=False)),
                ("one", spaces.OneOf([spaces.Graph(spaces.Discrete(2), None), spaces.Text(2)])),
                ("tup", spaces.Tuple([spaces.MultiBinary(2), spaces.MultiDiscrete([3, 2])])),
                ("a", spaces.Box(-np.inf, 0.0, (2,), np.float64)),
            ]
        ),
    ],
    ids=repr,
)
def test_spaces_roundtrip_explicit_space(space: spaces.Space[Any]) -> None:
    assert_space_roundtrip(space)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_spaces_box_bounds_keep_dtype_and_infinities(dtype: type) -> None:
    space = spaces.Box(np.array([-np.inf, 0.0, -1.0]), np.array([np.inf, np.inf, 1.0]), dtype=dtype)
    decoded = wire(space)
    assert decoded.dtype == space.dtype
    assert_identical(space.low, decoded.low)
    assert_identical(space.high, decoded.high)
    np.testing.assert_array_equal(decoded.bounded_below, [False, True, True])
    np.testing.assert_array_equal(decoded.bounded_above, [False, False, True])


def test_spaces_box_scalar_shape_stays_scalar() -> None:
    decoded = wire(spaces.Box(-1.0, 1.0, (), np.float32))
    assert decoded.shape == () and decoded.low.shape == ()
    assert decoded.sample().shape == ()


def test_spaces_discrete_description_is_plain_data() -> None:
    data = space_to_data(spaces.Discrete(4, start=-2, dtype=np.int32))
    assert data == {"type": "Discrete", "n": 4, "start": -2, "dtype": "<i4"}
    assert type(data["n"]) is int and type(data["start"]) is int


def test_spaces_discrete_sample_stays_numpy_integer_of_its_dtype() -> None:
    for dtype in (np.int64, np.int32):
        space = wire(spaces.Discrete(5, start=-2, dtype=dtype))
        space.seed(1)
        sample = space.sample()
        received = decode(encode(sample))
        assert type(received) is dtype and received == sample


def test_spaces_multidiscrete_keeps_two_dim_nvec_and_start() -> None:
    space = spaces.MultiDiscrete([[2, 3], [4, 5]], start=[[1, -1], [0, 10]], dtype=np.int32)
    decoded = wire(space)
    assert_identical(space.nvec, decoded.nvec)
    assert_identical(space.start, decoded.start)
    assert decoded.dtype == np.int32


def test_spaces_multibinary_keeps_int_and_tuple_n() -> None:
    assert wire(spaces.MultiBinary(5)).n == 5
    decoded = wire(spaces.MultiBinary((2, 3)))
    assert tuple(np.asarray(decoded.n).tolist()) == (2, 3)
    assert decoded.shape == (2, 3)


def test_spaces_text_keeps_charset_order_and_lengths() -> None:
    space = spaces.Text(7, min_length=2, charset="zyxa")
    decoded = wire(space)
    assert decoded.character_list == ("z", "y", "x", "a")
    assert (decoded.min_length, decoded.max_length) == (2, 7)
    # The flattened form indexes characters by their position: order must be preserved.
    for word in ("zyx", "axz", "aa"):
        assert_identical(flatten(space, word), flatten(decoded, word))


def test_spaces_dict_keeps_unsorted_key_order() -> None:
    space = spaces.Dict(
        [("b", spaces.Box(0, 1, (2,))), ("a", spaces.Discrete(3)), ("c", spaces.MultiBinary(2))]
    )
    decoded = wire(space)
    assert list(decoded.spaces) == ["b", "a", "c"]
    data = space_to_data(space)
    assert [key for key, _ in data["spaces"]] == ["b", "a", "c"]
    space.seed(3)
    for _ in range(5):
        sample = space.sample()
        assert list(sample) == ["b", "a", "c"]
        received = decode(encode(sample))
        assert list(received) == ["b", "a", "c"]
        assert_identical(flatten(space, sample), flatten(decoded, received))
    assert flatten_space(decoded) == flatten_space(space)


def test_spaces_dict_flatten_order_differs_from_sorted_order() -> None:
    # Guard that the previous test can fail: a sorted Dict flattens in a different order.
    unsorted = spaces.Dict([("b", spaces.Box(0, 1, (2,))), ("a", spaces.Discrete(3))])
    ordered = spaces.Dict({"b": spaces.Box(0, 1, (2,)), "a": spaces.Discrete(3)})
    sample = {"b": np.array([0.25, 0.5], np.float32), "a": np.int64(1)}
    assert not np.array_equal(flatten(unsorted, sample), flatten(ordered, sample))
    assert np.array_equal(flatten(wire(unsorted), sample), flatten(unsorted, sample))


def test_spaces_sequence_keeps_stack_flag() -> None:
    for stack in (True, False):
        decoded = wire(spaces.Sequence(spaces.Box(0, 1, (2,)), stack=stack))
        assert decoded.stack is stack
    stacked = spaces.Sequence(spaces.Discrete(4), stack=True)
    stacked.seed(0)
    sample = stacked.sample()
    assert_identical(sample, decode(encode(sample)))
    unstacked = spaces.Sequence(spaces.Discrete(4), stack=False)
    unstacked.seed(0)
    sample = unstacked.sample()
    assert type(decode(encode(sample))) is tuple


@pytest.mark.parametrize("edge_space", [None, spaces.Discrete(3), spaces.Box(0, 1, (2,))])
def test_spaces_graph_sample_stays_graph_instance(edge_space: Any) -> None:
    space = spaces.Graph(spaces.Box(-1, 1, (3,)), edge_space)
    decoded = wire(space)
    assert decoded.edge_space == edge_space
    space.seed(0)
    sample = space.sample(num_nodes=4, num_edges=3)
    received = decode(encode(sample))
    assert type(received) is GraphInstance
    assert_identical(sample, received)
    assert decoded.contains(received)


def test_spaces_one_of_sample_stays_index_value_tuple() -> None:
    space = spaces.OneOf([spaces.Discrete(3), spaces.Box(0, 1, (2,)), spaces.Text(3)])
    decoded = wire(space)
    space.seed(5)
    for _ in range(10):
        sample = space.sample()
        received = decode(encode(sample))
        assert type(received) is tuple and len(received) == 2
        assert type(received[0]) is type(sample[0])
        assert_identical(sample, received)
        assert decoded.contains(received)


def test_spaces_tuple_sample_stays_tuple() -> None:
    space = spaces.Tuple(
        [spaces.Discrete(2), spaces.Tuple([spaces.Text(2), spaces.MultiBinary(2)])]
    )
    space.seed(0)
    sample = space.sample()
    received = decode(encode(sample))
    assert type(received) is tuple and type(received[1]) is tuple
    assert_identical(sample, received)


# --------------------------------------------------------------------------- unsupported


class _BoxSubclass(spaces.Box):
    pass


class _CustomSpace(spaces.Space[int]):
    def sample(self, mask: Any = None, probability: Any = None) -> int:
        return 0

    def contains(self, x: Any) -> bool:
        return x == 0


@pytest.mark.parametrize(
    ("space", "name"),
    [
        (_BoxSubclass(0, 1, (2,)), "_BoxSubclass"),
        (_CustomSpace(), "_CustomSpace"),
        (spaces.Tuple([spaces.Discrete(2), _BoxSubclass(0, 1)]), "_BoxSubclass"),
        (spaces.Dict({"a": _CustomSpace()}), "_CustomSpace"),
        (spaces.Sequence(_CustomSpace()), "_CustomSpace"),
        (spaces.OneOf([spaces.Discrete(2), _CustomSpace()]), "_CustomSpace"),
        (spaces.Graph(_BoxSubclass(0, 1, (2,)), None), "_BoxSubclass"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_spaces_unsupported_space_raises_unsupported_space_error(
    space: spaces.Space[Any], name: str
) -> None:
    with pytest.raises(UnsupportedSpaceError, match=name) as info:
        space_to_data(space)
    assert isinstance(info.value, TypeError)


# --------------------------------------------------------------------------- malformed data

DISCRETE = {"type": "Discrete", "n": 2, "start": 0, "dtype": "<i8"}
TEXT = {"type": "Text", "max_length": 3, "min_length": 0, "charset": "ab"}


@pytest.mark.parametrize(
    "data",
    [
        5,
        None,
        [],
        "Box",
        {},
        {"type": "Box"},
        {"type": "Nope"},
        {"type": "box"},
        {"type": 5},
        {"type": None},
        {"type": "Box", "low": 0, "high": 1, "dtype": "garbage"},
        {"type": "Box", "low": 0, "high": 1, "dtype": "O"},
        {"type": "Box", "low": 0, "high": 1, "dtype": "object"},
        {"type": "Box", "low": 0, "high": 1, "dtype": "|V8"},
        {"type": "Box", "low": 0, "high": 1, "dtype": None},
        {"type": "Box", "low": 0, "high": 1, "dtype": 5},
        {"type": "Box", "low": 0, "high": 1, "dtype": "<U3"},
        {"type": "Box", "low": 1, "high": 0, "dtype": "<f4"},
        {"type": "Box", "low": "a", "high": 0, "dtype": "<f4"},
        {"type": "Box", "low": np.zeros(2), "high": np.ones(3), "dtype": "<f4"},
        {"type": "Box", "low": None, "high": None, "dtype": "<f4"},
        {"type": "Discrete", "n": 0, "start": 0, "dtype": "<i8"},
        {"type": "Discrete", "n": "a", "start": 0, "dtype": "<i8"},
        {"type": "Discrete", "n": 3.5, "start": 0, "dtype": "<i8"},
        {"type": "Discrete", "n": 3, "start": 0, "dtype": "<f8"},
        {"type": "Discrete", "n": 3, "start": 0, "dtype": "|O"},
        {"type": "Discrete", "n": 3, "start": 0},
        {"type": "MultiDiscrete", "nvec": [0], "start": [0], "dtype": "<i8"},
        {"type": "MultiDiscrete", "nvec": ["a"], "start": [0], "dtype": "<i8"},
        {"type": "MultiDiscrete", "nvec": [2, 3], "start": [0], "dtype": "<i8"},
        {"type": "MultiDiscrete", "nvec": [2, 3], "start": [0, 0], "dtype": "|V8"},
        {"type": "MultiBinary", "n": -1},
        {"type": "MultiBinary", "n": "a"},
        {"type": "MultiBinary", "n": None},
        {"type": "MultiBinary"},
        {"type": "Text", "max_length": 3, "min_length": 5, "charset": "ab"},
        {"type": "Text", "max_length": 3, "min_length": 0, "charset": 5},
        {"type": "Text", "max_length": "x", "min_length": 0, "charset": "ab"},
        {"type": "Tuple", "spaces": 5},
        {"type": "Tuple", "spaces": [5]},
        {"type": "Tuple", "spaces": [{"type": "Nope"}]},
        {"type": "Dict", "spaces": [["a"]]},
        {"type": "Dict", "spaces": "ab"},
        {"type": "Dict", "spaces": [["a", 5]]},
        {"type": "Dict", "spaces": [[["k"], DISCRETE]]},
        {"type": "Sequence", "space": None, "stack": True},
        {"type": "Sequence", "stack": True},
        {"type": "Graph", "node_space": TEXT, "edge_space": None},
        {"type": "Graph", "node_space": DISCRETE, "edge_space": TEXT},
        {"type": "Graph", "node_space": {"type": "Tuple", "spaces": []}, "edge_space": None},
        {"type": "Graph", "node_space": None, "edge_space": None},
        {"type": "Graph", "node_space": DISCRETE},
        {"type": "OneOf", "spaces": []},
        {"type": "OneOf", "spaces": 3},
    ],
    ids=lambda v: repr(v)[:60],
)
def test_spaces_malformed_data_raises_decode_error(data: Any) -> None:
    with pytest.raises(DecodeError) as info:
        space_from_data(data)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"type": "Box", "low": 0, "high": 1, "dtype": "garbage"}, "garbage"),
        ({"type": "Discrete", "n": 3, "start": 0, "dtype": "|O"}, "|O"),
        ({"type": "Discrete", "n": 0, "start": 0, "dtype": "<i8"}, "Discrete"),
        ({"type": "Box", "low": 0, "high": 1}, "dtype"),
        ({"type": "Nope"}, "Nope"),
    ],
    ids=["dtype", "object-dtype", "n", "missing-field", "type"],
)
def test_spaces_malformed_data_error_names_the_problem(data: Any, named: str) -> None:
    with pytest.raises(DecodeError) as info:
        space_from_data(data)
    assert named in str(info.value)


@pytest.mark.parametrize("kind", [["Box"], {"a": 1}], ids=["list", "map"])
def test_spaces_unhashable_type_field_raises_decode_error(kind: Any) -> None:
    with pytest.raises(DecodeError):
        space_from_data({"type": kind})


@pytest.mark.parametrize("field", ["n", "start"])
def test_spaces_discrete_out_of_range_int_raises_decode_error(field: str) -> None:
    data = decode(encode({**DISCRETE, field: 2**63}))
    with pytest.raises(DecodeError):
        space_from_data(data)


def test_spaces_deeply_nested_description_raises_decode_error() -> None:
    # 400 nested Tuples, written by hand: 800 msgpack levels, under msgpack's own limit.
    level = msgpack.packb("type") + msgpack.packb("Tuple") + msgpack.packb("spaces")
    frame = (b"\x82" + level + b"\x91") * 400 + msgpack.packb(DISCRETE)
    data = decode(frame)
    with pytest.raises(DecodeError):
        space_from_data(data)
