"""The setting names a deployment may use; any other stops start-up (config.load_config).

Flask and its extensions ignore a key they do not read, so a misspelt setting would leave
the server running as if it had not been set, without a word: TSD_DISCOVERY_DISABLE=all
during an incident leaves every discovery strategy on, TSD_REGISTRATON_OPEN=false leaves
sign-up open. So every TSD_* environment variable and every upper-case name in
instance/config.py must be one this server (or Flask, or an extension) reads, and the
message names the closest one; a setting's name in lower case in the file (Flask reads
only upper-case names there) is refused too. It is an error, not a warning: a warning in a
log nobody reads during an incident is as silent as none. The caller's own dict (tests, the
bench) is not checked. A module of its own, so config.py stays about the settings' values.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from flask_limiter.constants import ConfigVars

PREFIX = "TSD_"

# Flask-Limiter's own settings (RATELIMIT_DEFAULT, RATELIMIT_APPLICATION, ...).
LIMITER_SETTINGS = frozenset(value for name, value in vars(ConfigVars).items()
                             if name.isupper() and isinstance(value, str))

# Keys of other extensions that a deployer may set, each for a reason. Only these: a
# setting that would be ignored or overwritten is better refused like a typo.
EXTENSION_SETTINGS = frozenset({
    # Flask-SQLAlchemy: pool size, timeouts and connect_args for PostgreSQL; load_config
    # keeps a given one (it only sets a default).
    "SQLALCHEMY_ENGINE_OPTIONS",
})
# Left out on purpose, so refused:
#   SQLALCHEMY_DATABASE_URI  overwritten from DATABASE_URL: the server would use SQLite.
#   REMEMBER_COOKIE_*        Flask-Login's; the server never sets a remember-me cookie.
#   WTF_CSRF_FIELD_NAME, WTF_CSRF_HEADERS  the pages and scripts send csrf_token and
#                            X-CSRFToken by those names; another name breaks every form.
#   WTF_CSRF_SECRET_KEY      a second signing key the secret-key rules would not check.
#   SESSION_PROTECTION       set in code ("basic"); None would switch it off.

# TSD_* environment variables that are not app settings but are read elsewhere; the test
# suite exports some of them while it creates apps. Not valid in instance/config.py.
ENVIRONMENT_ONLY = frozenset({
    "INSTANCE_PATH",  # create_app(): where instance/ is
    "BIND", "WORKERS",  # gunicorn.conf.py
    "AGENT_SERVER",  # tsd_agent: the server's address (often set in the same shell)
    # tests/conftest.py, tests/support/skips.py (.ci/run exports the REQUIRE ones)
    "TEST_DB", "TEST_REQUIRE_ALL", "TEST_REQUIRE_POSTGRES",
    # tests/test_fuzz_forms.py, tests/test_schemathesis.py, tests/browser/
    "FUZZ_FORMS_EXAMPLES", "SCHEMATHESIS_EXAMPLES", "SCREENSHOTS",
})


def environment_keys(environ: Mapping[str, str]) -> dict[str, str]:
    """{config key: variable} for each TSD_* variable, as Flask's from_prefixed_env reads
    them: TSD_X__KEY sets KEY inside X, so X is the setting."""
    return {name[len(PREFIX):].split("__")[0]: name
            for name in sorted(environ) if name.startswith(PREFIX)}


def unknown_settings(config_names: Iterable[str], file_names: Iterable[str],
                     environ: Mapping[str, str]) -> list[str]:
    """A sentence for each name in instance/config.py (``file_names``: every name the file
    defines) or the environment that nothing reads; ``config_names`` are this server's and
    Flask's own."""
    known = {*config_names, *LIMITER_SETTINGS, *EXTENSION_SETTINGS}
    file_names = set(file_names)
    problems = []
    for key in sorted(file_names - known):
        if key.startswith("_"):
            continue  # the file's own helper (_PROXY = ...): Flask reads it, nothing uses it
        where = f"{key} in instance/config.py"
        if not key.isupper():
            # Flask reads only upper-case names from the file. A value of the file's own
            # (base = ...), or one the file also sets in upper case, is not a mistake.
            if key.upper() in file_names:
                continue
            if key.upper() in known:
                problems.append(f"{where} is not read: Flask reads only upper-case names "
                                f"in this file; write {key.upper()}.")
            elif key.upper() in ENVIRONMENT_ONLY:
                problems.append(f"{where} is not read: set {PREFIX}{key.upper()} in the "
                                "environment.")
            continue
        if key in ENVIRONMENT_ONLY:
            problems.append(f"{where} is not read: set {PREFIX}{key} in the environment.")
        else:
            problems.append(f"{where} is not a setting of this server{_hint(key, known)}.")
    for key, variable in environment_keys(environ).items():
        if key not in known and key not in ENVIRONMENT_ONLY:
            hint = _hint(key, known | ENVIRONMENT_ONLY, PREFIX)
            problems.append(f"{variable} is not a setting of this server{hint}.")
    return problems


def _hint(key: str, known: set[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key.upper(), sorted(known), n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""
