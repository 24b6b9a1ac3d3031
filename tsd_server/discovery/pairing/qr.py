"""QR images of links and codes, drawn by segno (SVG and PNG, no external services)."""

from __future__ import annotations

import io

import segno

FORMATS = {"svg": "image/svg+xml", "png": "image/png"}
DEFAULT_SCALE = 6
MAX_SCALE = 20


def render(text: str, fmt: str = "svg", *, scale: int = DEFAULT_SCALE) -> bytes:
    """The QR code of ``text`` as SVG or PNG bytes (error correction M, quiet zone 4)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown QR format {fmt!r}")
    code = segno.make(text, error="m", micro=False)
    buffer = io.BytesIO()
    options = {"xmldecl": False, "svgclass": "qr"} if fmt == "svg" else {}
    code.save(buffer, kind=fmt, scale=max(1, min(scale, MAX_SCALE)), border=4, **options)
    return buffer.getvalue()


def data_uri(text: str) -> str:
    """An SVG data URI for an ``<img>`` (the CSP allows ``img-src data:``, not inline SVG CSS)."""
    return segno.make(text, error="m", micro=False).svg_data_uri(scale=DEFAULT_SCALE, border=4)
