"""Settings that would silently weaken the server stop start-up instead: a misspelt name
(tsd_server/setting_names.py), Flask's TESTING and DEBUG from the deployment, and old
secret keys (SECRET_KEY_FALLBACKS) shorter than a key may be. The legitimate forms start.

These build apps without touching a database, so they run once, not per backend.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from flask import Flask
from itsdangerous import BadSignature

from tests.support import clean_env
from tsd_server import create_app
from tsd_server import setting_names as names_module
from tsd_server.config import DEFAULTS, FIXED, ConfigurationError
from tsd_server.secret_keys import MIN_SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent
KEY = "k" * MIN_SECRET_KEY

instance = clean_env.instance


def session_cookie(app: Flask, data: dict) -> str:
    return app.session_interface.get_signing_serializer(app).dumps(data)


def read_session(app: Flask, cookie: str) -> dict:
    return app.session_interface.get_signing_serializer(app).loads(cookie)


# --- misspelt and unknown names --------------------------------------------------------------


@pytest.mark.parametrize("variable, value, suggested", [
    ("TSD_DISCOVERY_DISABLE", "all", "TSD_DISCOVERY_DISABLED"),  # the kill switch, in an incident
    ("TSD_REGISTRATON_OPEN", "false", "TSD_REGISTRATION_OPEN"),
    ("TSD_registration_open", "false", "TSD_REGISTRATION_OPEN"),  # Flask keeps the case
    ("TSD_SECRET_KEY_FALLBACK", '["' + "o" * 40 + '"]', "TSD_SECRET_KEY_FALLBACKS"),
    ("TSD_RATELIMIT_STORAGE_URL", "redis://127.0.0.1:6379/0", "TSD_RATELIMIT_STORAGE_URI"),
    # Flask-SQLAlchemy's name is overwritten from TSD_DATABASE_URL: SQLite would be used.
    ("TSD_SQLALCHEMY_DATABASE_URI", "postgresql://db/tsd", "TSD_DATABASE_URL"),
    ("TSD_WORKER", "4", "TSD_WORKERS"),
    ("TSD_REMEMBER_COOKIE_DURATION", "60", None),  # no remember-me cookie is ever set
])
def test_an_unknown_environment_name_stops_start_up(instance, monkeypatch, variable, value,
                                                    suggested):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=re.escape(variable)) as refused:
        create_app({"SECRET_KEY": KEY})
    if suggested:
        assert f"did you mean {suggested}?" in str(refused.value)


def refusal_of_instance_file(instance, text: str) -> str:
    """The message start-up stops with when instance/config.py holds ``text``."""
    instance.mkdir(exist_ok=True)
    (instance / "config.py").write_text(text)
    with pytest.raises(ConfigurationError) as refused:
        create_app({"SECRET_KEY": KEY})
    return str(refused.value)


def test_an_unknown_name_in_the_instance_file_stops_start_up(instance):
    message = refusal_of_instance_file(instance, "DISCOVERY_DISABLE = 'all'\nWORKERS = 4\n"
                                                 "import os\nhelper = os.sep\n_private = 1\n"
                                                 "_PROXY = '10.0.0.1/32'\n")
    assert "DISCOVERY_DISABLE in instance/config.py" in message
    assert "did you mean DISCOVERY_DISABLED?" in message
    assert "set TSD_WORKERS in the environment" in message  # gunicorn.conf.py reads only that
    assert "helper" not in message and "_private" not in message  # Flask reads no such names
    assert "_PROXY" not in message  # the file's own helper: Flask reads it, nothing uses it


def test_a_setting_in_lower_case_in_the_instance_file_stops_start_up(instance):
    """Flask reads only upper-case names from the file: the kill switch below would be off."""
    message = refusal_of_instance_file(instance, "discovery_disabled = 'all'\n"
                                                 "Trusted_Proxies = ['10.0.0.1/32']\n"
                                                 "import os\nbase = os.sep\n")
    assert ("discovery_disabled in instance/config.py is not read: Flask reads only "
            "upper-case names in this file; write DISCOVERY_DISABLED.") in message
    assert "Trusted_Proxies in instance/config.py is not read" in message
    assert "write TRUSTED_PROXIES." in message
    assert "base" not in message and " os " not in message  # the file's own names


def test_the_instance_files_own_lower_case_tools_start(instance):
    """A helper named like a setting is no mistake when the file sets the setting, nor an
    import or a function; a lower-case gunicorn setting is pointed to the environment."""
    instance.mkdir()
    (instance / "config.py").write_text("import os\nenv = os.environ.get\n"
                                        "base_url = 'https://print.example.org'\n"
                                        "BASE_URL = base_url\n")
    assert create_app({"SECRET_KEY": KEY}).config["BASE_URL"] == "https://print.example.org"
    assert ("workers in instance/config.py is not read: set TSD_WORKERS in the environment"
            in refusal_of_instance_file(instance, "workers = 4\n"))


def test_every_setting_in_the_instance_file_starts(instance):
    """The file may name every setting there is (here with its default value)."""
    instance.mkdir()
    lines = [f"{key} = {value!r}" for key, value in DEFAULTS.items() if key != "SECRET_KEY"]
    (instance / "config.py").write_text("\n".join([*lines, f"SECRET_KEY = {KEY!r}", ""]))
    assert create_app().config["REGISTRATION_OPEN"] is True


def test_names_read_outside_the_app_config_and_other_packages_settings_start(instance,
                                                                             monkeypatch):
    for name in names_module.ENVIRONMENT_ONLY - {"INSTANCE_PATH"}:
        monkeypatch.setenv(f"TSD_{name}", "1")
    for variable, value in [
            ("TSD_SECRET_KEY", KEY),
            ("TSD_DISCOVERY_DISABLED", "all"),
            ("TSD_PERMANENT_SESSION_LIFETIME", "86400"),  # Flask's own
            ("TSD_PREFERRED_URL_SCHEME", "https"),
            ("TSD_RATELIMIT_HEADER_RETRY_AFTER_VALUE", "delta-seconds"),  # Flask-Limiter's
            ("TSD_SQLALCHEMY_ENGINE_OPTIONS", '{"pool_size": 5}'),
            ("TSD_RATELIMIT_STORAGE_OPTIONS__socket_timeout", "2"),  # nested: TSD_X__KEY
            ("TSD_WTF_CSRF_ENABLED", "false")]:  # a FIXED one: accepted, and changes nothing
        monkeypatch.setenv(variable, value)
    app = create_app()
    assert app.config["SQLALCHEMY_ENGINE_OPTIONS"] == {"pool_size": 5, "hide_parameters": True}
    assert app.config["WTF_CSRF_ENABLED"] is True


def _tsd_names_in_the_repository() -> set[str]:
    """TSD_* names in the code, scripts and deploy files (prose prefixes such as
    ``TSD_IP_MATCH_`` and this file's deliberate typos left out)."""
    files = [ROOT / "gunicorn.conf.py", ROOT / "Makefile", ROOT / "wsgi.py"]
    for folder in ("tsd_server", "tests", "bench", ".ci", "tsd_agent", "deploy"):
        files += [path for path in (ROOT / folder).rglob("*") if path.is_file()
                  and path.suffix in {".py", ".sh", ".service", ".example", ".conf", ""}]
    # The checker and the config tests: typos on purpose, and prose's TSD_X__KEY.
    skip = {ROOT / "tests" / "test_config_names.py", ROOT / "tests" / "test_config.py",
            ROOT / "tsd_server" / "config.py", ROOT / "tsd_server" / "setting_names.py"}
    found = set()
    for path in files:
        if path not in skip and "__pycache__" not in path.parts:
            found |= set(re.findall(r"\bTSD_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="ignore")))
    return found


def test_every_tsd_name_the_repository_uses_or_documents_starts():
    """gunicorn.conf.py, the agent and the test suite read TSD_* variables of their own
    (the suite exports TSD_TEST_DB while it creates apps): none of them may stop start-up,
    nor any setting the README's table documents."""
    readme = (ROOT / "README.md").read_text()
    configuration = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(TSD_[A-Z0-9_]+)` \|", configuration, re.M))
    used = _tsd_names_in_the_repository()
    assert {"TSD_WORKERS", "TSD_TEST_DB", "TSD_AGENT_SERVER", "TSD_BIND"} <= used
    config_names = {*DEFAULTS, *FIXED, *Flask.default_config}
    refused = names_module.unknown_settings(config_names, [],
                                            dict.fromkeys(used | documented, "x"))
    assert refused == []


# --- TESTING and DEBUG -----------------------------------------------------------------------


@pytest.mark.parametrize("off", ["off", "False", "no", "0"])
def test_testing_off_from_the_environment_is_off(instance, monkeypatch, off):
    """The review's finding: text "off" was truthy, and TESTING counts as development, so
    a production server started with a short key and with rate limits off."""
    monkeypatch.setenv("TSD_TESTING", off)
    monkeypatch.setenv("TSD_SECRET_KEY", "secret")
    with pytest.raises(ConfigurationError, match="at least 32 characters"):
        create_app()
    monkeypatch.setenv("TSD_SECRET_KEY", KEY)
    monkeypatch.setenv("TSD_RATELIMIT_ENABLED", "false")
    with pytest.raises(ConfigurationError, match="TSD_RATELIMIT_ENABLED=false"):
        create_app()
    monkeypatch.delenv("TSD_RATELIMIT_ENABLED")
    app = create_app()
    assert app.testing is False and app.config["TESTING"] is False


@pytest.mark.parametrize("env", [{}, {"TSD_ENV": "development"}])
@pytest.mark.parametrize("on", ["true", "on", "1", "True"])
def test_testing_from_the_environment_stops_start_up(instance, monkeypatch, env, on):
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("TSD_TESTING", on)
    with pytest.raises(ConfigurationError, match="TSD_TESTING is not a deployment setting"):
        create_app({"SECRET_KEY": KEY})


def test_testing_from_the_instance_file_stops_start_up(instance):
    assert ("TESTING in instance/config.py is not a deployment setting"
            in refusal_of_instance_file(instance, "TESTING = True\n"))


def test_testing_from_the_caller_still_counts_as_development(instance):
    """The test suite passes TESTING in create_app's dict, with keys shorter than 32."""
    app = create_app({"TESTING": True, "SECRET_KEY": "test-0123",
                      "SECRET_KEY_FALLBACKS": ["old"]})
    assert app.testing is True


def test_debug_from_the_deployment_is_parsed(instance, monkeypatch):
    """Allowed (under gunicorn it starts no debugger), but "off" must be off."""
    monkeypatch.setenv("TSD_DEBUG", "off")  # text, which Flask alone would take as true
    assert create_app({"SECRET_KEY": KEY}).debug is False
    monkeypatch.setenv("TSD_DEBUG", "on")
    assert create_app({"SECRET_KEY": KEY}).debug is True


# --- SECRET_KEY_FALLBACKS --------------------------------------------------------------------


@pytest.mark.parametrize("fallbacks", [
    '["secret"]',  # the review's forged admin cookie
    '["' + "x" * (MIN_SECRET_KEY - 1) + '"]',
    '["' + "o" * 64 + '", "replace-with-64-hex-characters"]',
])
def test_a_short_old_key_is_refused_in_production(instance, monkeypatch, fallbacks):
    monkeypatch.setenv("TSD_SECRET_KEY", KEY)
    monkeypatch.setenv("TSD_SECRET_KEY_FALLBACKS", fallbacks)
    with pytest.raises(ConfigurationError,
                       match="TSD_SECRET_KEY_FALLBACKS: every old key must be at least 32"
                       ) as refused:
        create_app()
    for key in ("secret", "x" * 8, "o" * 8, "replace-with"):
        assert key not in str(refused.value)
    monkeypatch.setenv("TSD_ENV", "development")  # a developer's own keys: their business
    assert create_app().config["SECRET_KEY_FALLBACKS"]


def test_a_short_old_key_in_the_instance_file_is_refused(instance):
    instance.mkdir()
    (instance / "config.py").write_text(f"SECRET_KEY = {KEY!r}\n"
                                        "SECRET_KEY_FALLBACKS = ['secret']\n")
    with pytest.raises(ConfigurationError, match="TSD_SECRET_KEY_FALLBACKS"):
        create_app()


@pytest.mark.parametrize("fallbacks", [
    "o" * 40,  # not JSON: text, and Flask would take each character as a key
    '"' + "o" * 40 + '"',  # a JSON string: the same
    "[12345678901234567890123456789012345]",
    '{"old": "' + "o" * 40 + '"}',
    "true",
])
@pytest.mark.parametrize("env", ["production", "development"])
def test_old_keys_that_are_not_a_list_of_text_are_refused(instance, monkeypatch, fallbacks,
                                                          env):
    monkeypatch.setenv("TSD_ENV", env)
    monkeypatch.setenv("TSD_SECRET_KEY", KEY)
    monkeypatch.setenv("TSD_SECRET_KEY_FALLBACKS", fallbacks)
    with pytest.raises(ConfigurationError, match="must be a JSON list") as refused:
        create_app()
    assert "o" * 8 not in str(refused.value) and "12345678" not in str(refused.value)


@pytest.mark.parametrize("none", ["", "[]", "null"])
def test_no_old_keys_starts(instance, monkeypatch, none):
    monkeypatch.setenv("TSD_SECRET_KEY", KEY)
    monkeypatch.setenv("TSD_SECRET_KEY_FALLBACKS", none)
    assert create_app().config["SECRET_KEY_FALLBACKS"] == []


def test_rotating_the_key_keeps_sessions_signed_with_the_old_one(instance, monkeypatch):
    """docs/production.md: the new key in TSD_SECRET_KEY, the old one as a fallback."""
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    monkeypatch.setenv("TSD_SECRET_KEY", old)
    cookie = session_cookie(create_app(), {"_user_id": "1"})
    monkeypatch.setenv("TSD_SECRET_KEY", new)
    with pytest.raises(BadSignature):
        read_session(create_app(), cookie)
    monkeypatch.setenv("TSD_SECRET_KEY_FALLBACKS", f'["{old}"]')
    rotated = create_app()
    assert read_session(rotated, cookie) == {"_user_id": "1"}
    assert read_session(rotated, session_cookie(rotated, {"a": 1})) == {"a": 1}
