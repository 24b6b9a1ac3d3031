"""Reading one setting's value: yes/no words, numbers, whole numbers in a range, comma lists,
and the error that stops start-up when a value cannot be used.

Apart from config.py, which applies the layers and checks the settings as a whole: these
are the tools that config.py and the modules checking their own settings (client_address,
proxy_fix, ip_match, kill_switch) share. config.py re-exports them under their old names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import click


class ConfigurationError(click.ClickException):
    """Unusable settings; the message says what to change (flask prints it in one line)."""


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
# No empty word: an empty value (``TSD_...=``) is what an unset ${VAR} in docker-compose or a
# systemd template gives, and it would switch TSD_IP_MATCH_REQUIRE_CONFIRMATION off silently.
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
# Why an empty value is refused, in its message.
UNSET_VARIABLE = "an unset ${VARIABLE} in a compose file or unit gives that"


def parse_bool(key: str, value: Any) -> bool:
    """A boolean setting; "False" or "off" (not JSON, so left as text) must not count as true,
    and an empty value counts as neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    if isinstance(value, str) and not value.strip():
        raise ConfigurationError(
            f"TSD_{key} is empty ({UNSET_VARIABLE}): set it to true or false, or remove it "
            "for the default.")
    raise ConfigurationError(f"TSD_{key} must be true or false, not {value!r}.")


def parse_number(key: str, value: Any) -> int | float:
    """A number given as text ("8", "0.5"); anything else is an error."""
    text = str(value).strip()
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        if math.isfinite(number):
            return number
    raise ConfigurationError(f"TSD_{key} must be a number, not {value!r}.")


def bounded_int_setting(config: Mapping[str, Any], key: str, low: int, high: int,
                        why: str = "") -> int:
    """A whole-number setting within [low, high]; anything else stops start-up, saying
    ``why`` the range is what it is when given."""
    number = config[key]
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        reason = f": {why}" if why else ""
        raise ConfigurationError(f"TSD_{key} must be a whole number from {low} to {high}"
                                 f"{reason}.")
    return number


def comma_list(value: Any) -> list[str]:
    """Settings that hold lists may come as a list or as "a, b, c" from the environment."""
    if not value:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part).strip() for part in value]
