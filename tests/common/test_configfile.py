"""The configuration file: sections onto settings, the environment over the file, unknown keys refused."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from corral.common.configfile import (
    LIST_SECTIONS,
    SECTIONS,
    ConfigError,
    find_config_file,
    origins,
    read_config_file,
)
from corral.common.settings import Settings, parse_headers

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "infra" / "corral.example.toml"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file ``CORRAL_CONFIG`` names, in a clean environment (no CORRAL_* variable set)."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("CORRAL_"):
            monkeypatch.delenv(name)
    path = tmp_path / "corral.toml"
    monkeypatch.setenv("CORRAL_CONFIG", str(path))
    return path


def test_sections_set_the_flat_settings(config: Path) -> None:
    config.write_text(
        '[redis]\nurl = "redis://:pw@10.0.0.5:6379/2"\n'
        '[api]\nport = 9001\nkeys = ["aaaaaaaaaaaaaaaa:admin", "bbbbbbbbbbbbbbbb"]\n'
        '[worker]\nid = "gpu-7"\nslots = 12\n'
        '[backend]\ntype = "openai"\nurl = "http://127.0.0.1:8080/v1"\ntoken = "sk-secret"\n'
        'headers = { "X-Tenant" = "research" }\nverify = false\n'
        "[scheduling]\ncold_delay = 0.5\npush_dispatch = false\n"
        "[limits]\nmax_queue = 7\n[retention]\nresult_ttl = 60\n"
        '[log]\nlevel = "debug"\nformat = "json"\naccess = true\n'
    )
    s = Settings()
    assert s.redis_url == "redis://:pw@10.0.0.5:6379/2" and s.api_port == 9001
    assert s.api_keys.get_secret_value() == "aaaaaaaaaaaaaaaa:admin,bbbbbbbbbbbbbbbb"
    assert (s.worker_id, s.worker_slots, s.backend, s.engine_kind) == ("gpu-7", 12, "openai", "openai")
    assert s.engine_headers() == {"X-Tenant": "research", "Authorization": "Bearer sk-secret"}
    assert s.backend_verify == "false" and s.cold_delay == 0.5 and s.push_dispatch is False
    assert (s.max_queue, s.result_ttl, s.log_level, s.log_format, s.log_access) == (
        7,
        60,
        "DEBUG",
        "json",
        True,
    )


def test_the_environment_wins_over_the_file_and_an_empty_variable_is_unset(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text("[worker]\nslots = 12\nweight = 2.0\n[api]\nport = 9001\n")
    monkeypatch.setenv("CORRAL_WORKER_SLOTS", "3")
    monkeypatch.setenv("CORRAL_API_PORT", "")  # compose's ${CORRAL_API_PORT:-}
    s = Settings()
    assert (s.worker_slots, s.worker_weight, s.api_port) == (3, 2.0, 9001)
    where = origins(Settings.model_fields, read_config_file(config, Settings.model_fields), {
        "CORRAL_WORKER_SLOTS": "3", "CORRAL_API_PORT": ""})  # fmt: skip
    assert where["worker_slots"] == "env:CORRAL_WORKER_SLOTS"
    assert where["worker_weight"] == where["api_port"] == f"file:{config}"
    assert where["job_timeout"] == "default"


def test_top_level_names_work_once(config: Path) -> None:
    config.write_text('worker_slots = 5\nlog_level = "WARNING"\n')
    assert (Settings().worker_slots, Settings().log_level) == (5, "WARNING")
    config.write_text("worker_slots = 5\n[worker]\nslots = 6\n")
    with pytest.raises(
        ConfigError, match=r"\[worker\] slots sets worker_slots again \(already set by worker_slots\)"
    ):
        Settings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[worker]\nslot = 3\n", r"corral.toml: unknown key \[worker\] slot \(did you mean slots\?\)$"),
        ("[workers]\nslots = 3\n", r"corral.toml: unknown key workers \(did you mean worker\?\)$"),
        ("worker_slot = 3\n", r"corral.toml: unknown key worker_slot \(did you mean worker_slots\?\)$"),
        ("log = 3\n", r"corral.toml: log is a section: write \[log\] and its keys$"),
        ("[api]\nredis_url = 'x'\n", r"corral.toml: unknown key \[api\] redis_url"),
        ("[worker\n", r"corral.toml: not valid TOML: .*line 1"),
    ],
)
def test_a_key_the_file_does_not_know_is_an_error_naming_it_and_the_file(
    config: Path, text: str, message: str
) -> None:
    config.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        Settings()
    assert str(config) in caught.value.message and "\n" not in caught.value.message


def test_a_wrong_value_is_pydantics_error_on_the_field(config: Path) -> None:
    config.write_text('[worker]\nslots = 0\n[log]\nformat = "xml"\n')
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert {e["loc"][0] for e in caught.value.errors()} == {"worker_slots", "log_format"}


def test_which_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CORRAL_CONFIG", raising=False)
    assert find_config_file() is None
    (tmp_path / "corral.toml").write_text("[worker]\nslots = 9\n")
    assert find_config_file() == Path("corral.toml") and Settings().worker_slots == 9
    monkeypatch.setenv("CORRAL_CONFIG", "")  # none, even with ./corral.toml there
    assert find_config_file() is None and Settings().worker_slots == 4
    other = tmp_path / "other.toml"
    other.write_text("[worker]\nslots = 2\n")
    monkeypatch.setenv("CORRAL_CONFIG", str(other))
    assert Settings().worker_slots == 2
    monkeypatch.setenv("CORRAL_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing\.toml not found"):
        Settings()


def test_every_setting_has_a_section_key() -> None:
    mapped = [name for mapping in SECTIONS.values() for name in mapping.values()]
    mapped += [setting for setting, _check in LIST_SECTIONS.values()]
    assert len(mapped) == len(set(mapped))
    assert set(Settings.model_fields) <= set(mapped), set(Settings.model_fields) - set(mapped)


def test_the_example_file_loads_and_covers_every_section(config: Path) -> None:
    """Every section, every key of it (commented out or set), and what it sets is what Settings() would default to
    (the example documents the defaults)."""
    config.write_text(EXAMPLE.read_text())
    loaded = Settings()
    text = EXAMPLE.read_text()
    document = tomllib.loads(text)
    for section, mapping in SECTIONS.items():
        assert section in document, section
        for key, name in mapping.items():
            if name in Settings.model_fields:
                assert key in document[section] or f"# {key} = " in text, f"[{section}] {key}"
    config.write_text("")
    default = Settings()
    for name in read_config_file(EXAMPLE, Settings.model_fields).values:
        assert getattr(loaded, name) == getattr(default, name), name


def test_the_compose_file_names_a_file_that_loads() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name in ("api", "worker"):
        mount = services[name]["volumes"][0]
        source, target = mount.split(":-", 1)[1].split("}:", 1)
        assert (ROOT / source).resolve() == EXAMPLE
        assert target.removesuffix(":ro") == services[name]["environment"]["CORRAL_CONFIG"]
    assert parse_headers('{"a": "1"}') == {"a": "1"}


def test_hosts_tables_become_the_fleets_hosts_and_a_bad_one_names_the_file(config: Path) -> None:
    from corral.common.hosts import configured_hosts

    config.write_text(
        '[[hosts]]\nurl = "http://127.0.0.1:11501"\nname = "gpu-1"\ntoken = "s3cret-token"\n\n'
        '[[hosts]]\nurl = "http://127.0.0.1:11502/v1"\nslots = 2\n'
    )
    settings = Settings()
    assert "s3cret" not in repr(settings)  # kept as a secret: `corral config` and logs mask it
    hosts = configured_hosts(settings)
    assert [(h.name, h.slots) for h in hosts] == [("gpu-1", 4), (hosts[1].name, 2)]
    assert hosts[0].secrets()["token"] == "s3cret-token"
    config.write_text('[[hosts]]\nname = "no-url"\n')
    with pytest.raises(ConfigError, match=r"corral.toml: \[\[hosts\]\] entry 1 needs a url"):
        Settings()
    config.write_text('[[hosts]]\nurl = "ftp://nowhere"\n')
    with pytest.raises(ValueError, match=r"hosts\[0\]"):  # checked in full when the fleet starts
        configured_hosts(Settings())
