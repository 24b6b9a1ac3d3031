"""JSON routes of pairing_code and qr_code (docs/pairing.md has the calls with examples).

Three blueprints, by owner: ``pairing_api_bp`` (pairing_code alone: web codes) and
``qr_api_bp`` (qr_code alone: the QR image) are returned by their strategy's
``blueprints()``, so the registry answers 503 on them while the strategy is off;
``device_flow_bp`` serves both and reads both switches itself.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask_login import current_user, login_required

from tsd_server import client_address
from tsd_server.api.errors import ApiError
from tsd_server.api.request_body import device_id_field, json_object, string_field
from tsd_server.discovery.link_service import LinkResult
from tsd_server.discovery.pairing import codes, device_flow, limits, links, qr, web_codes
from tsd_server.extensions import csrf
from tsd_server.rate_limit_keys import network_key

pairing_api_bp = Blueprint("pairing_api", __name__, url_prefix="/api/v1")
device_flow_bp = Blueprint("device_flow_api", __name__, url_prefix="/api/v1")
qr_api_bp = Blueprint("qr_api", __name__, url_prefix="/api/v1")

DEVICE_CODE_HEADER = "X-Device-Code"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"


def _device_fields(body: dict) -> tuple[str, str, str | None]:
    return (device_id_field(body), string_field(body, "name"),  # type: ignore[return-value]
            string_field(body, "model", required=False))


def _link_answer(result: LinkResult, status: int) -> tuple[Response, int]:
    return jsonify({"access_token": result.access_token, "token_type": "Bearer",
                    "device": result.device_json}), status


@pairing_api_bp.post("/pairing/codes")
@login_required
@limits.code_create_per_address
@limits.code_create_per_account
def create_code():
    """A logged-in user gets a one-time code to type into the printer."""
    issued = web_codes.issue(current_user, client_address.for_request())
    return jsonify({"code": issued.display, "expires_in": issued.ttl,
                    "expires_at": issued.expires_at.isoformat()}), 201


@pairing_api_bp.post("/pairing/redeem")
@csrf.exempt
@limits.redeem_guess_per_address
def redeem_code():
    """The device turns the code into its access token (once)."""
    body = json_object()
    code = string_field(body, "code", max_length=32)
    device_uid, name, model = _device_fields(body)
    result = web_codes.redeem(code or "", device_uid=device_uid, name=name, model=model)
    return _link_answer(result, 201)


@device_flow_bp.post("/device/authorize")
@csrf.exempt
@limits.busy_limit("DEVICE_FLOW_AUTHORIZE_LIMIT")
@limits.busy_limit("DEVICE_FLOW_AUTHORIZE_LIMIT_PER_NETWORK", key_func=network_key)
def authorize():
    """RFC 8628 §3.1/3.2: codes and links for a device that wants to be linked.

    Anyone may ask, so every answer is a row someone else can make us keep: limited per
    address (IPv6: per /64) and per network (IPv6: per /48), which one customer holds."""
    body = json_object()
    device_uid, name, model = _device_fields(body)
    device_flow.strategies_on()  # both off: 503 before anything else
    base = links.require_base_url()
    started = device_flow.start(device_uid=device_uid, name=name, model=model,
                                address=client_address.for_request())
    answer: dict = {"device_code": started.device_code,
                    "verification_uri": links.verification_uri(base),
                    "expires_in": started.expires_in, "interval": started.interval}
    if started.user_code is not None:
        answer["user_code"] = codes.display(started.user_code)
    if started.qr_token is not None:
        answer["verification_uri_complete"] = links.verification_uri_complete(
            base, started.qr_token)
    return jsonify(answer)


def _token_request_field(body: dict, name: str, **options: Any) -> str | None:
    """A field of the token request. A missing or malformed one is RFC 6749 §5.2's
    ``invalid_request`` (still naming the ``field``), the code OAuth clients know, rather
    than the ``missing_field`` / ``invalid_field`` of the other routes."""
    try:
        return string_field(body, name, **options)
    except ApiError as error:
        raise ApiError(400, "invalid_request", error.message, **error.extra) from None


@device_flow_bp.post("/device/token")
@csrf.exempt
@limits.busy_limit("DEVICE_FLOW_TOKEN_LIMIT")
def token():
    """RFC 8628 §3.4/3.5: pending, slow_down, denied, expired, or the token once.

    Its error bodies also carry ``error_description`` (``api.errors.OAUTH_ERROR_ENDPOINTS``).
    """
    body = json_object()
    grant_type = _token_request_field(body, "grant_type", required=False, max_length=80)
    if grant_type is not None and grant_type != GRANT_TYPE:
        raise ApiError(400, "unsupported_grant_type", f"grant_type must be {GRANT_TYPE}.")
    device_code = _token_request_field(body, "device_code", max_length=128)
    device_flow.strategies_on()  # both off: 503
    return _link_answer(device_flow.poll(device_code), 200)


@qr_api_bp.get("/device/authorize/qr")
@csrf.exempt
@limits.busy_limit("QR_IMAGE_LIMIT")
def authorize_qr():
    """The QR image of verification_uri_complete, for a device that cannot draw one.

    The device proves it holds the device code with the ``X-Device-Code`` header; a device
    code in the URL is refused, since URLs end up in logs and browser histories.
    """
    if "device_code" in request.args:
        raise ApiError(400, "device_code_in_url", "Send the device code in the "
                       f"{DEVICE_CODE_HEADER} header, never in the URL.")
    fmt = request.args.get("format", "svg")
    if fmt not in qr.FORMATS:
        raise ApiError(400, "invalid_field", "format must be svg or png.", field="format")
    scale = request.args.get("scale", str(qr.DEFAULT_SCALE))
    # ASCII and short first: int() refuses "²" (a digit to isdigit()) and 5000-digit text.
    if not (scale.isascii() and scale.isdigit() and len(scale) <= 3) \
            or not 1 <= int(scale) <= qr.MAX_SCALE:
        raise ApiError(400, "invalid_field", f"scale must be 1 to {qr.MAX_SCALE}.",
                       field="scale")
    device_code = request.headers.get(DEVICE_CODE_HEADER, "").strip()
    if not device_code:
        raise ApiError(400, "missing_device_code",
                       f"The {DEVICE_CODE_HEADER} header is required.")
    base = links.require_base_url()
    qr_token = device_flow.qr_token_for_device(device_code)
    image = qr.render(links.verification_uri_complete(base, qr_token), fmt, scale=int(scale))
    return Response(image, mimetype=qr.FORMATS[fmt])
