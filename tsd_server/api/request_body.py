"""Reading JSON request bodies: malformed or mistyped input is a 400 with a clear code.

A body is parsed only when it is declared as JSON (``application/json`` or ``...+json``);
anything else is 415 ``unsupported_media_type``. ``text/plain`` (like form encodings) is a
type any web page can make a visitor's browser send cross-site without a CORS preflight,
so parsing such a body would let a page announce, authorize or redeem from the visitor's
address. A JSON content type makes the browser ask first, and this server never says yes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from tsd_server.api.errors import ApiError
from tsd_server.printable_text import has_control_characters

# Identifiers chosen by agents (device_id): printable, no spaces, bounded.
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
# UTF-16 surrogates: only ever half of a character, never text on their own.
LONE_SURROGATES = re.compile("[\ud800-\udfff]")
# How much of a duplicate key an error message repeats.
MAX_KEY_SHOWN = 64


def json_object(*, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object.

    No body is ``invalid_json`` (or ``{}`` with ``allow_empty``); invalid JSON, a duplicate
    key or anything but an object is ``invalid_json``. A body of another media type never
    gets here (``refuse_non_json_bodies``).
    """
    raw = request.get_data(cache=True)
    _refuse_truncated(raw)
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "A JSON object body is required.")
    try:
        body = json.loads(raw, object_pairs_hook=_refuse_duplicate_keys)
    except DuplicateKey as duplicate:
        raise ApiError(400, "invalid_json", f"The key {_shown(duplicate.key)} appears more "
                       "than once in one object of the body.") from None
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return body


def refuse_non_json_bodies() -> None:
    """Before any view or rate limit of ``/api/``: a body not declared as JSON is 415
    ``unsupported_media_type``. Refused this early so that such a request, which any page
    can make a visitor's browser send, does not even count against the visitor's
    household's rate limits (a decorated limit counts before its view runs)."""
    if not request.path.startswith("/api/"):
        return
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if (request.content_length or chunked) and not request.is_json:
        raise ApiError(415, "unsupported_media_type",
                       "The body must be JSON. Send Content-Type: application/json.")


class DuplicateKey(ValueError):
    """A JSON object names one key twice: which value was meant is not ours to guess (the
    last one would win silently, and another parser in front of us may take the first)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _shown(key: str) -> str:
    """The key for a message: quoted and escaped by repr, and cut (a key can be 64 KiB)."""
    return repr(key) if len(key) <= MAX_KEY_SHOWN else repr(key[:MAX_KEY_SHOWN]) + "..."


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
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
    if has_control_characters(value):
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


def device_id_in_path(value: str) -> str:
    """A device_id taken from the URL, checked as in a body (and as the OpenAPI document
    declares it); one that cannot be a device's id names no device: 404 ``not_found``.
    Never cut to length: a longer id is another id, not the device it starts with."""
    if not DEVICE_ID_PATTERN.fullmatch(value):
        raise ApiError(404, "not_found", "No printer with this id is announcing near you.")
    return value
