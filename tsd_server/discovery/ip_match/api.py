"""ip_match JSON API: the device's announce, and the user's nearby / link / confirm.

Thin views: parse the body, call the service, answer JSON. The device call is CSRF-exempt
and never reads cookies (a device is known by its device_secret alone); user calls need
the session cookie and, for POST, the CSRF token in ``X-CSRFToken``.
"""

from __future__ import annotations

import re

from flask import Blueprint, jsonify
from flask_login import current_user, login_required

from tsd_server.api.request_body import (
    device_id_field,
    device_id_in_path,
    json_object,
    string_field,
)
from tsd_server.clock import utcnow
from tsd_server.config import configured_limit
from tsd_server.discovery.ip_match import announcements, listing, offers
from tsd_server.discovery.ip_match.settings import (
    ANNOUNCE_LIMIT_MESSAGE,
    NEARBY_LIMIT_MESSAGE,
    IpMatchSettings,
    claim_limit,
)
from tsd_server.extensions import csrf, limiter

bp = Blueprint("ip_match_api", __name__, url_prefix="/api/v1/discovery")
# Bad TSD_IP_MATCH_* settings stop start-up instead of failing on the first request.
bp.record_once(lambda state: IpMatchSettings.from_config(state.app.config))

# At least 128 bits in URL-safe base64 (token_urlsafe(16) is 22 characters).
DEVICE_SECRET_PATTERN = re.compile(r"^[A-Za-z0-9._~+/=-]{22,128}$")


@bp.post("/announce")
@csrf.exempt
@limiter.limit(configured_limit("IP_MATCH_ANNOUNCE_RATE_LIMIT"),
               error_message=ANNOUNCE_LIMIT_MESSAGE)
def announce():
    body = json_object()
    request = announcements.AnnounceRequest(
        device_uid=device_id_field(body),
        device_secret=string_field(body, "device_secret", max_length=128,  # type: ignore[arg-type]
                                   pattern=DEVICE_SECRET_PATTERN),
        name=string_field(body, "name"),  # type: ignore[arg-type]
        model=string_field(body, "model", required=False),
        agent_version=string_field(body, "agent_version", required=False, max_length=40),
    )
    return jsonify(announcements.announce(request))


@bp.get("/nearby")
@login_required
@limiter.limit(configured_limit("IP_MATCH_NEARBY_RATE_LIMIT"), error_message=NEARBY_LIMIT_MESSAGE)
def nearby():
    return jsonify(listing.nearby(current_user))


@bp.post("/nearby/<device_id>/link")
@login_required
@claim_limit
def link(device_id: str):
    offer = offers.link(current_user, device_id_in_path(device_id))
    return jsonify({"offer_id": offer.public_id, "status": offer.status,
                    "expires_in": offers.expires_in(offer, utcnow())})


@bp.post("/offers/<offer_id>/confirm")
@login_required
@claim_limit
def confirm(offer_id: str):
    code = string_field(json_object(), "code", max_length=16) or ""
    return jsonify({"status": offers.confirm(current_user, offer_id, code)})
