"""How the Lua scripts are loaded: headers that name their arguments as the Python layouts do, key names from
common.keys alone, and each script carrying only the helpers it uses."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest
import redis

from corral.api.apikeys import RATE
from corral.common import keys, scripts

SCRIPTS = [value for value in vars(scripts).values() if isinstance(value, scripts.LuaScript)] + [RATE]
LUA_FILES = [
    *files("corral.common").joinpath("lua").iterdir(),
    *files("corral.api").joinpath("lua").iterdir(),
]


@pytest.mark.unit
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.name)
def test_each_header_names_the_scripts_keys_and_arguments_in_order(script: scripts.LuaScript) -> None:
    package = "corral.api" if script is RATE else "corral.common"
    header = scripts.read_lua(script.name, package).split("\n\n")[0]
    assert header.startswith(f"-- {script.name.upper()}: ")
    assert re.findall(r"^-- KEY\.(\w+)", header, re.M) == list(script.key_layout._fields)  # type: ignore[attr-defined]
    assert re.findall(r"^-- ARG\.(\w+)", header, re.M) == list(script.arg_layout._fields)  # type: ignore[attr-defined]
    # the keys or arguments after the named ones, when the script takes more
    assert ("KEY_REST" in script.source) == ("-- KEY..." in header)
    assert ("ARG_REST" in script.source) == ("-- ARG..." in header)


@pytest.mark.unit
def test_no_lua_file_types_a_key_name() -> None:
    for path in LUA_FILES:
        assert not re.search(r"'(corral|rq|corral-auth):", path.read_text()), path.name


@pytest.mark.unit
def test_a_script_carries_only_the_helpers_it_uses() -> None:
    defined = re.findall(r"^local (?:function )?(\w+)", scripts.EMIT.source, re.M)
    assert defined == ["events_key", "chunks_channel", "KEY", "ARG", "ARG_REST", "emit", "cur", "n", "seq"]
    lib = scripts.read_lua("lib")
    helpers = set(re.findall(r"^local (?:function )?(\w+)", lib, re.M))
    used = {name for s in SCRIPTS for name in re.findall(r"^local (?:function )?(\w+)", s.source, re.M)}
    assert helpers <= used  # no helper that no script uses


@pytest.mark.unit
def test_a_key_builder_is_its_python_function_in_lua() -> None:
    assert scripts._builder("subqueue_key", keys.subqueue_key) == (
        "local function subqueue_key(model, priority, submitter) return 'corral:sq:' .. model .. '|' .. priority"
        " .. '|' .. submitter end"
    )
    with pytest.raises(ValueError):
        scripts._lua_value("it's")


@pytest.mark.integration
def test_every_key_builder_gives_what_python_gives(r: redis.Redis) -> None:
    builders = [line for line in scripts._names() if line.startswith("local function ")]
    assert len(builders) >= 15
    for line in builders:
        name, params = re.match(r"local function (\w+)\(([^)]*)\)", line).groups()  # type: ignore[union-attr]
        args = [f"a{i}" for i, _ in enumerate(params.split(", "))]
        lua = f"{line}\nreturn {name}({', '.join(repr(a) for a in args)})"
        assert r.eval(lua, 0).decode() == getattr(keys, name)(*args), name
