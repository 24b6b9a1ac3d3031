"""Configuration layers (defaults, instance/config.py, TSD_* environment, the caller's dict),
the secret key rules, and settings checked at start-up.

These build apps without touching a database, so they run once, not per backend.
"""

from __future__ import annotations

import runpy
import stat
from pathlib import Path

import pytest
from flask import Flask

from tests.support import clean_env
from tests.support.apps import another_app
from tsd_server import config as config_module
from tsd_server import create_app, secret_keys
from tsd_server.config import DEFAULTS, ConfigurationError

ROOT = Path(__file__).resolve().parent.parent


instance = clean_env.instance


def test_defaults(instance):
    app = create_app({"SECRET_KEY": "k" * 32})
    assert app.instance_path == str(instance)
    assert app.config["ENV"] == "production"
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{instance / 'tsd.sqlite3'}"
    assert app.config["MAX_CONTENT_LENGTH"] == 64 * 1024
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert app.config["PROXY_FIX_X_FOR"] == 0 and app.config["TRUSTED_PROXIES"] == ""
    assert app.config["IP_MATCH_ALLOW_PRIVATE"] is False
    for blueprint in ("system", "api_devices", "auth", "web"):
        assert blueprint in app.blueprints


def test_layers_apply_in_order(instance, monkeypatch):
    instance.mkdir()
    (instance / "config.py").write_text(
        "LOG_LEVEL = 'WARNING'\nMAX_CONTENT_LENGTH = 1000\nREGISTRATION_OPEN = False\n"
        "BASE_URL = 'https://from-file.example'\n")
    monkeypatch.setenv("TSD_MAX_CONTENT_LENGTH", "2000")
    monkeypatch.setenv("TSD_BASE_URL", "https://from-env.example")
    app = create_app({"SECRET_KEY": "k" * 32, "BASE_URL": "https://from-caller.example"})
    assert app.config["LOG_LEVEL"] == "WARNING"  # file over default
    assert app.config["REGISTRATION_OPEN"] is False  # file over default
    assert app.config["MAX_CONTENT_LENGTH"] == 2000  # environment over file
    assert app.config["BASE_URL"] == "https://from-caller.example"  # caller over environment


def test_database_url_from_environment(instance, monkeypatch):
    monkeypatch.setenv("TSD_DATABASE_URL", "postgresql+psycopg2://tsd@127.0.0.1/tsd")
    app = create_app({"SECRET_KEY": "k" * 32})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://tsd@127.0.0.1/tsd"


def test_relative_instance_path_is_made_absolute(instance, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TSD_INSTANCE_PATH", "here")
    app = create_app({"SECRET_KEY": "k" * 32})
    assert app.instance_path == str(tmp_path / "here")
    assert (tmp_path / "here").is_dir()


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("True", True), ("1", True), ("on", True),
    ("false", False), ("False", False), ("0", False), ("off", False),
])
def test_boolean_settings_from_environment(instance, monkeypatch, text, expected):
    # "False" is not JSON, so it arrives as text; it must not switch LAN mode on.
    monkeypatch.setenv("TSD_IP_MATCH_ALLOW_PRIVATE", text)
    monkeypatch.setenv("TSD_REGISTRATION_OPEN", text)
    app = create_app({"SECRET_KEY": "k" * 32})
    assert app.config["IP_MATCH_ALLOW_PRIVATE"] is expected
    assert app.config["REGISTRATION_OPEN"] is expected
    assert app.extensions["tsd.proxy_settings"].allow_private is expected


def test_boolean_setting_as_text_in_config_file(instance):
    instance.mkdir()
    (instance / "config.py").write_text("IP_MATCH_ALLOW_PRIVATE = 'false'\n"
                                        "MAX_CONTENT_LENGTH = '1000'\n")
    app = create_app({"SECRET_KEY": "k" * 32})
    assert app.config["IP_MATCH_ALLOW_PRIVATE"] is False
    assert app.config["MAX_CONTENT_LENGTH"] == 1000


def test_integer_settings_from_environment(instance, monkeypatch):
    monkeypatch.setenv("TSD_PROXY_FIX_X_FOR", "1")
    monkeypatch.setenv("TSD_PROXY_FIX_X_PROTO", "1")
    monkeypatch.setenv("TSD_TRUSTED_PROXIES", "127.0.0.1/32, ::1/128")
    app = create_app({"SECRET_KEY": "k" * 32})
    settings = app.extensions["tsd.proxy_settings"]
    assert settings.x_for == 1
    assert [str(net) for net in settings.trusted_proxies] == ["127.0.0.1/32", "::1/128"]


def test_trusted_proxies_as_a_list_in_config_file(instance):
    instance.mkdir()
    (instance / "config.py").write_text("TRUSTED_PROXIES = ['10.0.0.0/8', '192.168.0.1']\n")
    app = create_app({"SECRET_KEY": "k" * 32})
    nets = app.extensions["tsd.proxy_settings"].trusted_proxies
    assert [str(net) for net in nets] == ["10.0.0.0/8", "192.168.0.1/32"]


@pytest.mark.parametrize("key, value, mentions", [
    ("IP_MATCH_ALLOW_PRIVATE", "maybe", "TSD_IP_MATCH_ALLOW_PRIVATE"),
    ("PROXY_FIX_X_FOR", "two", "TSD_PROXY_FIX_X_FOR"),
    ("PROXY_FIX_X_FOR", "-1", "TSD_PROXY_FIX_X_FOR"),
    ("MAX_CONTENT_LENGTH", "64k", "TSD_MAX_CONTENT_LENGTH"),
    ("MAX_CONTENT_LENGTH", "nan", "TSD_MAX_CONTENT_LENGTH"),
    ("PROXY_FIX_X_FOR", "1.5", "TSD_PROXY_FIX_X_FOR"),
    ("TRUSTED_PROXIES", "10.0.0.0/8, proxy.lan", "TSD_TRUSTED_PROXIES"),
    ("IPV6_HOUSEHOLD_PREFIX", "0", "TSD_IPV6_HOUSEHOLD_PREFIX"),
    ("IPV6_HOUSEHOLD_PREFIX", "129", "TSD_IPV6_HOUSEHOLD_PREFIX"),
    ("IP_MATCH_PRIVATE_PREFIX_V4", "33", "TSD_IP_MATCH_PRIVATE_PREFIX_V4"),
    *[("MAX_PRINTERS_PER_ACCOUNT", value, "TSD_MAX_PRINTERS_PER_ACCOUNT")
      for value in ("0", "-1", "100001", "many", "2.5")],
    # The other ProxyFix counts: -1 would trust the header's leftmost part, the client's.
    *[(f"PROXY_FIX_X_{name}", value, f"TSD_PROXY_FIX_X_{name}")
      for name in ("PROTO", "HOST", "PORT", "PREFIX") for value in ("-1", "0.5", "11")],
])
def test_bad_settings_stop_start_up_with_the_setting_named(instance, monkeypatch, key, value,
                                                           mentions):
    monkeypatch.setenv(f"TSD_{key}", value)
    with pytest.raises(ConfigurationError, match=mentions):
        create_app({"SECRET_KEY": "k" * 32})


@pytest.mark.parametrize("uri", ["rediss+tls://:S3cretPW@127.0.0.1:6379/0",
                                 "async+redis://:S3cretPW@127.0.0.1:6379/0", "S3cretPW",
                                 "redis+sentinel://:S3cretPW@127.0.0.1:26379/mymaster",
                                 "memcached://S3cretPW@127.0.0.1:11211"])
def test_an_unknown_rate_limit_storage_stops_start_up_without_its_password(
        instance, monkeypatch, uri):
    monkeypatch.setenv("TSD_RATELIMIT_STORAGE_URI", uri)
    with pytest.raises(ConfigurationError, match="TSD_RATELIMIT_STORAGE_URI") as refused:
        create_app({"SECRET_KEY": "k" * 32})
    assert "S3cretPW" not in str(refused.value)


@pytest.mark.parametrize("key, weaker", [
    ("SESSION_COOKIE_HTTPONLY", "false"), ("SESSION_COOKIE_SAMESITE", "None"),
    ("WTF_CSRF_ENABLED", "false"), ("WTF_CSRF_CHECK_DEFAULT", "false"),
    ("WTF_CSRF_SSL_STRICT", "false"), ("WTF_CSRF_METHODS", "[]"), ("LOGIN_DISABLED", "true"),
    ("RATELIMIT_SWALLOW_ERRORS", "true"), ("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", "true"),
])
def test_security_settings_cannot_be_weakened(instance, monkeypatch, key, weaker):
    monkeypatch.setenv(f"TSD_{key}", weaker)
    app = create_app({"SECRET_KEY": "k" * 32, key: weaker})
    assert app.config[key] == config_module.FIXED[key]


# "false" arrives as JSON false; "off" as text, which Flask-Limiter alone would take as true.
@pytest.mark.parametrize("off", ["false", "off"])
def test_rate_limits_cannot_be_switched_off_in_production(instance, monkeypatch, off):
    """The bound on guessing pairing codes and passwords rests on the limits: a production
    server must not start without them. A benchmark on its own machine may."""
    monkeypatch.setenv("TSD_RATELIMIT_ENABLED", off)
    with pytest.raises(ConfigurationError, match="TSD_RATELIMIT_ENABLED=false"):
        create_app({"SECRET_KEY": "k" * 32})
    with pytest.raises(ConfigurationError, match="TSD_RATELIMIT_ENABLED=false"):
        create_app({"SECRET_KEY": "k" * 32, "RATELIMIT_ENABLED": "false"})  # instance/config.py
    # Not create_app: Flask-Limiter keeps `enabled` on its one Limiter, which would stay off
    # for every later app in this process.
    app = Flask(__name__, instance_path=str(instance))
    config_module.load_config(app, {"SECRET_KEY": "k" * 32, "ENV": "development"})
    assert app.config["RATELIMIT_ENABLED"] is False


def test_login_stays_required_whatever_the_environment_says(instance, monkeypatch, tmp_path):
    """Flask-Login's LOGIN_DISABLED (meant for its own tests) would turn every login check
    into a no-op; from the environment it must change nothing."""
    monkeypatch.setenv("TSD_LOGIN_DISABLED", "true")
    app = create_app({"SECRET_KEY": "k" * 32,
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'login.sqlite3'}"})
    client = app.test_client()
    for path in ("/", "/account/password", "/admin/audit"):
        answer = client.get(path)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"], path


def test_every_default_survives_type_checking():
    """A helper adding a setting with a bool/int default must keep it parseable."""
    assert set(DEFAULTS) >= {"ENV", "SECRET_KEY", "DATABASE_URL", "MAX_CONTENT_LENGTH"}
    for key, default in DEFAULTS.items():
        if isinstance(default, bool):
            assert config_module.parse_bool(key, default) is default
        elif isinstance(default, int | float):
            assert config_module.parse_number(key, str(default)) == default


# --- the secret key ------------------------------------------------------------------------


def test_production_requires_a_secret_key(instance):
    with pytest.raises(ConfigurationError, match="TSD_SECRET_KEY"):
        create_app()
    assert not (instance / "secret_key").exists()


def test_production_uses_the_given_key(instance, monkeypatch):
    monkeypatch.setenv("TSD_SECRET_KEY", "0123456789abcdef" * 2)
    app = create_app()
    assert app.config["SECRET_KEY"] == "0123456789abcdef" * 2
    assert not (instance / "secret_key").exists()


@pytest.mark.parametrize("key", [
    "replace-with-64-hex-characters",  # deploy/tsd-server.env.example's placeholder
    "0123456789abcdef",
    "x" * 31,
])
def test_production_refuses_a_short_or_example_key(instance, monkeypatch, key):
    """Whoever knows the key can sign an admin's session cookie: the example file's
    placeholder, left in by mistake, must stop the start, not run a forgeable server."""
    monkeypatch.setenv("TSD_SECRET_KEY", key)
    with pytest.raises(ConfigurationError, match="at least 32 characters"):
        create_app()
    monkeypatch.setenv("TSD_ENV", "development")  # a developer's own key: their business
    assert create_app().config["SECRET_KEY"] == key


def test_the_example_settings_file_does_not_start_as_it_is(instance, monkeypatch):
    example = ROOT / "deploy" / "tsd-server.env.example"
    settings = dict(line.split("=", 1) for line in example.read_text().splitlines()
                    if line and not line.startswith("#"))
    monkeypatch.setenv("TSD_ENV", settings["TSD_ENV"])
    monkeypatch.setenv("TSD_SECRET_KEY", settings["TSD_SECRET_KEY"])
    with pytest.raises(ConfigurationError, match="TSD_SECRET_KEY"):
        create_app()


def test_one_apps_nested_setting_does_not_reach_the_next_app(instance, monkeypatch):
    """TSD_X__KEY is written into the dict under X; the defaults' own dict must not keep
    it (tests, and anything else making several apps in one process)."""
    monkeypatch.setenv("TSD_RATELIMIT_STORAGE_OPTIONS__socket_timeout", "7")
    assert create_app({"SECRET_KEY": "k" * 32}).config["RATELIMIT_STORAGE_OPTIONS"][
        "socket_timeout"] == 7
    monkeypatch.delenv("TSD_RATELIMIT_STORAGE_OPTIONS__socket_timeout")
    assert "socket_timeout" not in create_app({"SECRET_KEY": "k" * 32}).config[
        "RATELIMIT_STORAGE_OPTIONS"]


def test_the_example_config_file_does_not_start_with_its_placeholder(instance):
    """instance/config.example.py, copied to instance/config.py with its SECRET_KEY line
    uncommented and left as it is: refused, like the environment file's placeholder."""
    example = (ROOT / "instance" / "config.example.py").read_text()
    [line] = [line for line in example.splitlines() if line.startswith("# SECRET_KEY")]
    instance.mkdir()
    (instance / "config.py").write_text(line.removeprefix("# ") + "\n")
    with pytest.raises(ConfigurationError, match="at least 32 characters"):
        create_app()


def test_numeric_secret_key_still_signs_sessions(instance, monkeypatch):
    monkeypatch.setenv("TSD_SECRET_KEY", "1234567890" * 4)
    app = create_app()
    assert app.config["SECRET_KEY"] == "1234567890" * 4
    serializer = app.session_interface.get_signing_serializer(app)
    assert serializer.loads(serializer.dumps({"a": 1})) == {"a": 1}


def test_development_key_is_generated_once_and_kept(instance, monkeypatch):
    monkeypatch.setenv("TSD_ENV", "development")
    first = create_app()
    key_file = instance / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.config["SECRET_KEY"] == key_file.read_text().strip()
    assert len(first.config["SECRET_KEY"]) >= 64

    # A restart reads the same key, so a session cookie signed before it is still valid.
    cookie = first.session_interface.get_signing_serializer(first).dumps({"_user_id": "1"})
    second = create_app()
    assert second.config["SECRET_KEY"] == first.config["SECRET_KEY"]
    assert second.session_interface.get_signing_serializer(second).loads(cookie) == {
        "_user_id": "1"}
    assert [p.name for p in instance.iterdir() if "secret" in p.name] == ["secret_key"]


def test_development_key_race_reads_the_winner(instance, monkeypatch):
    """Another worker writes the key between our existence check and our write."""
    instance.mkdir()
    (instance / "secret_key").write_text("w" * 64)
    monkeypatch.setattr(Path, "exists", lambda self: False)
    app = Flask("race", instance_path=str(instance))
    assert secret_keys._development_key(app, development=True) == "w" * 64
    assert sorted(p.name for p in instance.iterdir()) == ["secret_key"]


def test_empty_development_key_file_is_refused(instance, monkeypatch):
    instance.mkdir()
    (instance / "secret_key").write_text("\n")
    monkeypatch.setenv("TSD_ENV", "development")
    with pytest.raises(ConfigurationError, match="secret_key"):
        create_app()


def test_wsgi_exposes_the_app(instance, monkeypatch):
    monkeypatch.setenv("TSD_SECRET_KEY", "k" * 32)
    namespace = runpy.run_path(str(ROOT / "wsgi.py"))
    assert isinstance(namespace["app"], Flask)
    assert namespace["app"].instance_path == str(instance)


def test_statement_parameters_are_hidden_on_every_bind_unless_the_operator_says(
        instance, monkeypatch):
    """A failed statement's error must not carry an email or password hash into a log
    (tests/test_abuse_secrets.py shows it on an outage); an operator may still choose."""
    from tsd_server.extensions import db

    app = create_app({"SECRET_KEY": "k" * 32})
    with app.app_context():
        assert [engine.hide_parameters for engine in db.engines.values()] == [True, True]
    monkeypatch.setenv("TSD_SQLALCHEMY_ENGINE_OPTIONS", '{"hide_parameters": false}')
    with create_app({"SECRET_KEY": "k" * 32}).app_context():
        assert not db.engine.hide_parameters
    monkeypatch.setenv("TSD_SQLALCHEMY_ENGINE_OPTIONS", '"hide_parameters"')
    with pytest.raises(ConfigurationError, match="must be a JSON object"):
        create_app({"SECRET_KEY": "k" * 32})


def test_the_operators_engine_options_reach_both_binds(database):
    """Flask-SQLAlchemy gives SQLALCHEMY_ENGINE_OPTIONS to the default bind only; the
    autocommit bind, which serves device calls, announces and polls, must connect as the
    operator set it too (TLS settings in connect_args, say)."""
    if not database.startswith("postgresql"):
        pytest.skip("PostgreSQL: what libpq connected with")
    from tsd_server.extensions import db

    options = {"connect_args": {"application_name": "operator-choice"}}
    with another_app(database, SQLALCHEMY_ENGINE_OPTIONS=options) as application, \
            application.app_context():
        for bind, engine in db.engines.items():
            with engine.connect() as connection:
                sent = connection.connection.dbapi_connection.get_dsn_parameters()
            assert sent["application_name"] == "operator-choice", bind
        assert len(db.engines) == 2
