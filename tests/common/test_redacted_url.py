"""common.settings.redacted_url: the one URL redactor of logs, heartbeats and the dashboard."""

from __future__ import annotations

import pytest

from corral.common.settings import Settings, redacted_url

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
        # a password goes, the user name beside it stays (which ACL user); a lone name may be a token: it goes
        ("redis://corral-api:s3cret@redis:6379/0", "redis://corral-api:***@redis:6379/0"),
        ("redis://:s3cret@redis/0", "redis://:***@redis/0"),
        ("https://user:pw@host:1/v1", "https://user:***@host:1/v1"),
        ("https://user:@host:1/v1", "https://user:***@host:1/v1"),
        ("https://sk-token@host/v1", "https://***@host/v1"),
        ("http://a@b@host/x", "http://***@host/x"),
        ("http://u:p@w@host/x", "http://u:***@host/x"),
        # a query can hold certificate paths or a password; a fragment is dropped
        ("rediss://h:6380/0?ssl_ca_certs=/x/ca.pem", "rediss://h:6380/0?***"),
        ("redis://h:6379?password=s3cret", "redis://h:6379?***"),
        ("redis://u:s3cret@h/0?x=a@b", "redis://u:***@h/0?***"),
        ("https://h/v1#s3cret", "https://h/v1"),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?***"),
        ("", ""),
    ],
)
def test_masks_credentials_and_query(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",  # urlsplit refuses it
        # a password with an unescaped '/', '?' or '#' ends the authority early: its tail would show
        "redis://u:s3/cret@h/0",
        "redis://u:s3?cret@h/0",
        "redis://u:s3#cret@h/0",
    ],
)
def test_unparsable_or_ambiguous_is_a_placeholder(url: str) -> None:
    assert redacted_url(url) == "<unparsable url>"


def test_engine_display_url_is_redacted() -> None:
    settings = Settings(backend_url="https://user:s3cret@127.0.0.1:8080/v1?key=s3cret")
    assert settings.engine_display_url == "https://user:***@127.0.0.1:8080/v1?***"
