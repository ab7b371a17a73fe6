"""common.jsonfast: orjson's speed, the standard library's answers (it falls back where orjson refuses)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.common import jsonfast


def test_compact_utf8_output() -> None:
    value = {"text": "café ☕", "n": [1, 2.5, None, True]}
    assert jsonfast.dumps(value) == '{"text":"café ☕","n":[1,2.5,null,true]}'
    assert jsonfast.dumpb(value) == jsonfast.dumps(value).encode()


@pytest.mark.parametrize(
    "value",
    [
        {"prompt": "\ud800 half a pair"},  # a lone surrogate: orjson cannot encode it
        {"seed": 2**70},  # over 64 bits
        {1: "an int key"},  # json writes it as "1"
    ],
)
def test_values_orjson_refuses_are_encoded_as_the_standard_library_does(value: Any) -> None:
    assert jsonfast.dumps(value) == json.dumps(value, separators=(",", ":"))
    assert jsonfast.dumpb(value) == json.dumps(value, separators=(",", ":")).encode()


def test_text_orjson_refuses_is_read_as_the_standard_library_reads_it() -> None:
    text = '{"prompt":"\\ud800"}'
    for read in (jsonfast.loads, jsonfast.loads_exact):
        assert read(text) == read(text.encode()) == json.loads(text)
    assert jsonfast.loads(memoryview(text.encode())) == json.loads(text)


@pytest.mark.parametrize("number", [2**64 - 1, 2**64 + 1, 2**70 + 1, -(2**63) - 1, 10**40 + 1])
def test_a_callers_integers_stay_exact(number: int) -> None:
    text = f'{{"options":{{"seed":{number}}}}}'
    assert jsonfast.loads_exact(text) == jsonfast.loads_exact(text.encode()) == {"options": {"seed": number}}
    assert jsonfast.loads_exact(jsonfast.dumps({"n": number})) == {"n": number}


def test_non_finite_floats_are_written_as_null() -> None:
    assert jsonfast.dumps([float("inf"), float("nan")]) == "[null,null]"


def test_constants_go_to_parse_constant() -> None:
    assert jsonfast.loads_exact("[NaN]", parse_constant=lambda name: name) == ["NaN"]

    def refuse(name: str) -> Any:
        raise ValueError(name)

    with pytest.raises(ValueError, match="Infinity"):
        jsonfast.loads_exact('{"x": Infinity}', parse_constant=refuse)


def test_invalid_json_raises_value_error() -> None:
    for bad in ("", "{", '{"a":}', b"\xff"):
        for read in (jsonfast.loads, jsonfast.loads_exact):
            with pytest.raises(ValueError):
                read(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def within_64_bits(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | list | dict):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    return all(map(within_64_bits, value.values() if isinstance(value, dict) else value))


@given(json_values)
def test_round_trip_agrees_with_the_standard_library(value: Any) -> None:
    expected = json.loads(json.dumps(value))
    assert jsonfast.loads_exact(jsonfast.dumps(value)) == expected
    assert jsonfast.loads_exact(json.dumps(value)) == expected
    if within_64_bits(value):  # what loads is for: JSON Corral or Ollama wrote
        assert jsonfast.loads(jsonfast.dumpb(value)) == expected


def nest(depth: int) -> str:
    return "[" * depth + "]" * depth


DEEPEST = jsonfast.MAX_DEPTH


@pytest.mark.parametrize("data", [nest(DEEPEST), '{"a":' * (DEEPEST - 1) + "{}" + "}" * (DEEPEST - 1),
                                  '{"n":12345678901234567890123,"x":' + nest(DEEPEST - 1) + "}"])  # fmt: skip
def test_a_request_nested_to_the_limit_is_read(data: str) -> None:
    assert jsonfast.loads_request(data) == jsonfast.loads_request(data.encode()) == json.loads(data)


@pytest.mark.parametrize(
    "data",
    [nest(jsonfast.MAX_DEPTH + 1), nest(1025), nest(100_000), '{"a":' * 5000 + "1" + "}" * 5000,
     '{"n":12345678901234567890123,"x":' + nest(5000) + "}", '{"n":12345678901234567890123,"x":' + nest(600) + "}"],
)  # fmt: skip
def test_a_request_nested_past_the_limit_is_refused(data: str) -> None:
    """orjson refuses more than 1,024 levels and the standard library raised RecursionError: now a ValueError."""
    for raw in (data, data.encode()):
        with pytest.raises(jsonfast.RefusedJSON, match=f"nested deeper than {jsonfast.MAX_DEPTH} levels"):
            jsonfast.loads_request(raw)
    with pytest.raises(ValueError):
        jsonfast.loads_exact(nest(5000))


@pytest.mark.parametrize(
    "data",
    ['"\\ud800"', '{"prompt":"a\\udfffb"}', '{"\\ud800":1}', '[[["\\udbff"]]]',
     '{"n":12345678901234567890123,"p":"\\ud800"}', '{"pair reversed":"\\ude00\\ud83d"}'],
)  # fmt: skip
def test_a_request_with_a_lone_surrogate_is_refused(data: str) -> None:
    with pytest.raises(jsonfast.RefusedJSON, match="lone surrogate"):
        jsonfast.loads_request(data.encode())


def test_a_request_reads_surrogate_pairs_long_integers_and_refuses_constants() -> None:
    assert jsonfast.loads_request(b'{"p":"\\ud83d\\ude00"}') == {"p": "\U0001f600"}
    assert jsonfast.loads_request(b'{"seed":123456789012345678901234}') == {"seed": 123456789012345678901234}
    assert jsonfast.loads_request(b"5") == 5 and jsonfast.loads_request(b"null") is None
    for data in (b'{"t":NaN}', b"[Infinity]", b"-Infinity"):
        with pytest.raises(jsonfast.RefusedJSON, match="is not JSON"):
            jsonfast.loads_request(data)
