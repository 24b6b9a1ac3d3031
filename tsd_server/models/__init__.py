"""Database models, one module per concept; imported here so Alembic sees every table."""

from tsd_server.models.audit import AuditEvent
from tsd_server.models.device import Device
from tsd_server.models.flag import StrategyFlag
from tsd_server.models.ip_match import Announcement, Offer  # noqa: F401
from tsd_server.models.pairing import DeviceAuthorization, PairingCode  # noqa: F401
from tsd_server.models.user import User

__all__ = ["AuditEvent", "Device", "StrategyFlag", "User"]
