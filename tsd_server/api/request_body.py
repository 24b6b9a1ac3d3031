"""Reading JSON request bodies: malformed or mistyped input is a 400 with a clear code."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from tsd_server.api.errors import ApiError

# Identifiers chosen by agents (device_id): printable, no spaces, bounded.
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
CONTROL_CHARACTERS = re.compile("[\x00-\x1f]")
# UTF-16 surrogates: only ever half of a character, never text on their own.
LONE_SURROGATES = re.compile("[\ud800-\udfff]")


def json_object(*, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object; anything else is ``invalid_json``."""
    raw = request.get_data(cache=True)
    _refuse_truncated(raw)
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "A JSON object body is required.")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return body


def _refuse_truncated(raw: bytes) -> None:
    """A body without Content-Length (chunked) is cut at MAX_CONTENT_LENGTH by Werkzeug
    without an error; one that reached the limit is refused, not parsed in part."""
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        raise RequestEntityTooLarge()


def string_field(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = True,
    max_length: int = 80,
    pattern: re.Pattern[str] | None = None,
) -> str | None:
    """A string field, stripped; wrong type, empty, too long or off-pattern is ``invalid_field``."""
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, "missing_field", f"'{name}' is required.", field=name)
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"'{name}' must be a string.", field=name)
    value = value.strip()
    if not value and required:
        raise ApiError(400, "missing_field", f"'{name}' must not be empty.", field=name)
    if len(value) > max_length:
        raise ApiError(400, "invalid_field",
                       f"'{name}' is longer than {max_length} characters.", field=name)
    if CONTROL_CHARACTERS.search(value):
        raise ApiError(400, "invalid_field", f"'{name}' contains control characters.",
                       field=name)
    if LONE_SURROGATES.search(value):
        # JSON's "\ud800" escapes give Python such halves of a pair; no database takes them.
        raise ApiError(400, "invalid_field", f"'{name}' is not valid Unicode text.",
                       field=name)
    if pattern is not None and not pattern.fullmatch(value):
        raise ApiError(400, "invalid_field", f"'{name}' has an invalid format.", field=name)
    return value or None


def device_id_field(body: dict[str, Any]) -> str:
    return string_field(body, "device_id", pattern=DEVICE_ID_PATTERN)  # type: ignore[return-value]
