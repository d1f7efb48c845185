"""Configuration: TOML loading, defaults, and clear errors for every kind of mistake."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from xmppd.core.config import (
    Certificate,
    Config,
    ConfigError,
    Limits,
    Listener,
    default_data_dir,
    from_dict,
    load,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xmppd.toml"
    path.write_text(text)
    return path


# -- defaults -------------------------------------------------------------------------------


def test_defaults_without_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("XMPPD_DATA_DIR", str(tmp_path / "d"))
    config = load(None)
    assert config.domains == ("localhost",)
    assert config.data_dir == tmp_path / "d"
    assert config.c2s == (Listener("127.0.0.1", 5222), Listener("127.0.0.1", 5223, True))
    assert config.require_encryption and config.allow_plain  # PLAIN, only ever over TLS
    assert config.limits == Limits()
    assert config.storage_url == f"sqlite:///{tmp_path / 'd' / 'xmppd.sqlite3'}"
    assert config.certificate_for("localhost") == Certificate(
        tmp_path / "d" / "certs" / "localhost.crt", tmp_path / "d" / "certs" / "localhost.key"
    )


def test_default_limits_are_the_documented_ones():
    limits = Limits()
    assert limits.max_stanza_size_bytes == 256 * 1024
    assert limits.max_stanza_size_preauth_bytes == 8 * 1024
    assert limits.max_auth_failures == 3
    assert limits.auth_timeout_s == 30
    assert limits.max_preauth_connections_per_ip == 100
    assert limits.auth_backoff_after_failures == 5
    assert limits.auth_backoff_max_s == 60
    assert limits.auth_failures_forgotten_after_s == 900
    assert limits.auth_failed_usernames_per_ip_per_min == 20


def test_default_data_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XMPPD_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "xmppd"


def test_empty_file_is_all_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("XMPPD_DATA_DIR", str(tmp_path))
    assert load(write(tmp_path, "")) == Config()


def test_config_is_frozen():
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.domains = ("x",)  # type: ignore[misc]
    assert not config.replace(allow_plain=False).allow_plain and config.allow_plain


# -- a full file ------------------------------------------------------------------------------


FULL = """
[server]
domains = ["Example.COM.", "chat.example.com"]
data_dir = "var"
storage = "memory:"
log_level = "debug"

[c2s]
listen = ["0.0.0.0:5222", "[::1]:15222"]
direct_tls = ["127.0.0.1:5223"]
require_encryption = true
allow_plain = true

[limits]
max_stanza_size_bytes = 100000
auth_timeout_s = 2.5
max_preauth_connections_per_ip = 0
auth_backoff_max_s = 0.5

[certificates."example.com"]
cert = "certs/example.pem"
key = "/etc/keys/example.key"

[modules]
disabled = ["time"]
[modules.ping]
interval_s = 60

[s2s]
listen = ["0.0.0.0:5269"]
routes = { "other.test" = "127.0.0.1:15269" }

[components]
listen = ["127.0.0.1:5347"]
"muc.example.com" = { secret = "s3cret" }
"""


def test_full_file(tmp_path):
    config = load(write(tmp_path, FULL))
    assert config.domains == ("example.com", "chat.example.com")
    assert config.data_dir == tmp_path / "var"  # relative to the file
    assert config.storage_url == "memory:"
    assert config.log_level == "debug"
    assert config.c2s == (
        Listener("0.0.0.0", 5222), Listener("::1", 15222), Listener("127.0.0.1", 5223, True),
    )
    assert config.allow_plain
    assert config.limits.max_stanza_size_bytes == 100000
    assert config.limits.auth_timeout_s == 2.5
    assert config.limits.max_preauth_connections_per_ip == 0
    assert config.limits.auth_backoff_max_s == 0.5
    assert config.limits.max_auth_failures == 3  # untouched default
    cert = config.certificate_for("example.com")
    assert cert == Certificate(tmp_path / "certs" / "example.pem", Path("/etc/keys/example.key"))
    assert config.modules_disabled == ("time",)
    assert config.modules_options == {"ping": {"interval_s": 60}}
    assert config.s2s == (Listener("0.0.0.0", 5269),)
    assert config.s2s_routes == {"other.test": ("127.0.0.1", 15269)}
    assert config.component_listeners == (Listener("127.0.0.1", 5347),)
    assert config.components == {"muc.example.com": "s3cret"}


def test_int_limit_given_as_float_where_float_expected(tmp_path):
    config = from_dict({"limits": {"auth_timeout_s": 1}})
    assert config.limits.auth_timeout_s == 1.0 and isinstance(config.limits.auth_timeout_s, float)


# -- errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path)


def test_bad_toml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "[server]\ndomains = [\"a\"\nallow = \n")
    with pytest.raises(ConfigError, match=r"xmppd\.toml.*line"):
        load(path)


@pytest.mark.parametrize("text,message", [
    ("colour = 'blue'", "unknown setting.*top level.*colour"),
    ("[server]\ndomain = ['x']", r"unknown setting.*server.*domain"),
    ("[c2s]\nallow_plaintext = true", "unknown setting.*c2s.*allow_plaintext"),
    ("[limits]\nmax_stanzas = 3", "unknown setting.*limits.*max_stanzas"),
    ("[s2s]\nlisten_on = []", "unknown setting.*s2s.*listen_on"),
    ("[modules]\ndisable = ['ping']", "unknown setting.*modules.*disable"),
])
def test_unknown_keys_are_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text))


@pytest.mark.parametrize("data,message", [
    ({"server": {"domains": []}}, "non-empty list"),
    ({"server": {"domains": "example.com"}}, "server.domains: expected list"),
    ({"server": {"domains": ["bad domain"]}}, "not a valid domain"),
    ({"server": {"domains": ["user@example.com"]}}, "not a valid domain"),
    ({"server": {"data_dir": 3}}, "server.data_dir: expected str"),
    ({"server": {"log_level": "loud"}}, "log_level"),
    ({"server": "example.com"}, "server must be a table"),
    ({"c2s": {"listen": "127.0.0.1:5222"}}, "list of"),
    ({"c2s": {"listen": ["127.0.0.1"]}}, "is not host:port"),
    ({"c2s": {"listen": ["127.0.0.1:99999"]}}, "is not host:port"),
    ({"c2s": {"allow_plain": "yes"}}, "c2s.allow_plain: expected bool"),
    ({"limits": {"max_depth": -1}}, "limits.max_depth"),
    ({"limits": {"max_depth": True}}, "limits.max_depth"),
    ({"limits": {"max_depth": "10"}}, "limits.max_depth"),
    ({"limits": {"max_stanza_size_bytes": 1.5}}, "limits.max_stanza_size_bytes.*whole"),
    ({"limits": {"auth_backoff_after_failures": 2.5}}, "auth_backoff_after_failures.*whole"),
    ({"limits": {"auth_backoff_max_s": -1}}, "limits.auth_backoff_max_s"),
    ({"limits": {"auth_failed_usernames_per_ip_per_min": "5"}},
     "limits.auth_failed_usernames_per_ip_per_min"),
    ({"limits": {"max_connections_per_ip": 5}},
     "max_connections_per_ip was renamed.*max_preauth_connections_per_ip"),
    ({"limits": {"auth_failures_per_ip_per_min": 5}},
     "auth_failures_per_ip_per_min was renamed.*auth_failed_usernames_per_ip_per_min"),
    ({"certificates": {"example.com": {"cert": "a"}}}, "exactly 'cert' and 'key'"),
    ({"certificates": {"example.com": {"cert": 1, "key": "k"}}}, "certificates.example.com"),
    ({"modules": {"disabled": "ping"}}, "modules.disabled: expected list"),
    ({"modules": {"disabled": [1]}}, "modules.disabled"),
    ({"s2s": {"routes": {"x.test": "nohost"}}}, "is not host:port"),
    ({"components": {"muc.example.com": {"password": "x"}}}, "needs a 'secret'"),
    ({"admins": "admin@example.com"}, "admins: expected list"),
    ({"admins": ["example.com"]}, "admins: 'example.com' is not an account address"),
    ({"admins": ["admin@example.com/pc"]}, "not an account address"),
    ({"admins": [7]}, "admins: 7 is not an account address"),
    ({"admins": ["@@"]}, "admins: '@@' is not a valid JID"),
])
def test_invalid_values(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data)


def test_admins_are_normalized_bare_jids():
    config = from_dict({"admins": ["Admin@Example.COM", "admin@example.com", "ops@example.net"]})
    assert config.admins == ("admin@example.com", "ops@example.net")
    assert Config().admins == ()
