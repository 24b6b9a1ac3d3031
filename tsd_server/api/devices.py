"""Device calls (bearer token) and the owner's device list."""

from __future__ import annotations

from flask import Blueprint, g, jsonify
from flask_login import current_user, login_required

from tsd_server import devices
from tsd_server.api.errors import ApiError
from tsd_server.auth.device_auth import device_required
from tsd_server.extensions import csrf

bp = Blueprint("api_devices", __name__, url_prefix="/api/v1")


@bp.get("/device/me")
@csrf.exempt
@device_required
def device_me():
    device = g.device
    return jsonify({"device": device.to_json(),
                    "owner": {"display_name": device.owner_display_name}})


@bp.get("/devices")
@login_required
def list_devices():
    return jsonify({"devices": [
        {**d.to_json(), "pk": d.id, "active": d.is_active, "needs_relink": d.needs_relink,
         "linked_from_ip": d.linked_from_ip,
         "last_seen_at": d.last_seen_at.isoformat() if d.last_seen_at else None}
        for d in devices.devices_of(current_user)]})


@bp.delete("/devices/<int:device_pk>")
@login_required
def unlink_device(device_pk: int):
    device = devices.owned_device(current_user, device_pk)
    if device is None or not devices.unlink(device, current_user):  # False: not linked
        raise ApiError(404, "not_found", "No such device among yours.")
    return jsonify({"status": "unlinked"})
