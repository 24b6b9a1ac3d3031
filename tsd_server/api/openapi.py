"""GET /api/v1/openapi.json: the OpenAPI 3.1 description of every /api/v1 route.

The document is a file in the package (``openapi.json``), read and parsed once when the
app is created, so a broken file stops start-up instead of failing a request.
tests/test_openapi.py keeps it true to the URL map; tests/test_schemathesis.py checks the
answers against it.
"""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, Response, current_app

DOCUMENT = Path(__file__).with_name("openapi.json")
EXTENSION_KEY = "tsd.openapi"

bp = Blueprint("api_openapi", __name__, url_prefix="/api/v1")


def load() -> bytes:
    """The document's bytes, after checking they parse as an OpenAPI 3.1 object."""
    raw = DOCUMENT.read_bytes()
    document = json.loads(raw)
    if not str(document.get("openapi", "")).startswith("3.1"):
        raise ValueError(f"{DOCUMENT} is not an OpenAPI 3.1 document")
    return raw


bp.record_once(lambda state: state.app.extensions.__setitem__(EXTENSION_KEY, load()))


@bp.get("/openapi.json")
def openapi_document():
    return Response(current_app.extensions[EXTENSION_KEY], mimetype="application/json")
