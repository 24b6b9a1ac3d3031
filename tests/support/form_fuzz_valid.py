"""One known-valid submission per page form (``VALID``), for tests/test_fuzz_forms.py.

Each is sent the way the generated requests are (``World.submit``: fields named right, a
working CSRF token), so that the fuzz test's refusals are the input's doing, not the way
the requests are sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select

from tests.support.form_fuzz_world import World
from tests.support.pairing import shown_request
from tsd_server.models import (
    Device,
    DeviceAuthorization,
    Offer,
    PairingCode,
    StrategyFlag,
    User,
)

# One known-valid submission per form, sent the way the generated ones are: the fields are
# named right and the CSRF token works, so the refusals above are the input's doing.
VALID: dict[str, Callable[[World], None]] = {}
NEW_PASSWORD = "another horse battery"
WINDOW = {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}


def valid(endpoint: str) -> Callable[[Callable[[World], None]], Callable[[World], None]]:
    def register(check: Callable[[World], None]) -> Callable[[World], None]:
        VALID[endpoint] = check
        return check
    return register


@valid("auth.register")
def _sign_up(world: World) -> None:
    response = world.submit("user", "POST", "/register", email="new@example.org",
                            display_name="New", password=NEW_PASSWORD, confirm=NEW_PASSWORD)
    assert response.status_code == 302
    assert world.scalar(select(func.count()).select_from(User)) == 3


@valid("auth.login")
def _log_in(world: World) -> None:
    email, password = world.accounts["user"]
    response = world.submit("user", "POST", "/login", email=email, password=password)
    assert response.status_code == 302 and response.location == "/"


@valid("auth.password")
def _change_password(world: World) -> None:
    email, password = world.accounts["user"]
    response = world.submit("user", "POST", "/account/password", current=password,
                            password=NEW_PASSWORD, confirm=NEW_PASSWORD)
    assert response.status_code == 302 and response.location == "/"
    world.accounts["user"] = (email, NEW_PASSWORD)


@valid("auth.logout")
def _log_out(world: World) -> None:
    response = world.submit("user", "POST", "/logout")
    assert response.status_code == 302 and response.location == "/login"


@valid("web.rename")
def _rename(world: World) -> None:
    pk = world.user_devices[0]
    response = world.submit("user", "POST", f"/printers/{pk}/rename", name="Renamed")
    assert response.status_code == 302
    assert world.scalar(select(Device.name).where(Device.id == pk)) == "Renamed"


@valid("web.unlink")
def _unlink(world: World) -> None:
    pk = world.user_devices[0]
    assert world.submit("user", "POST", f"/printers/{pk}/unlink").status_code == 302
    assert world.scalar(select(Device.token_hash).where(Device.id == pk)) is None


@valid("web.unlink_all")
def _unlink_all(world: World) -> None:
    assert world.submit("user", "POST", "/printers/unlink-all", confirm="y").status_code == 302
    assert world.scalar(select(func.count()).select_from(Device).where(
        Device.id.in_(world.user_devices), Device.token_hash.is_not(None))) == 0


@valid("pairing_web.create_code")
def _get_a_code(world: World) -> None:
    assert world.submit("user", "POST", "/printers/add/code").status_code == 200
    assert world.scalar(select(func.count()).select_from(PairingCode)) == 1


@valid("pairing_web.link")
def _enter_a_code(world: World) -> None:
    response = world.submit("user", "POST", "/link", code=world.user_code)
    assert response.status_code == 302 and response.location == "/link/confirm"


@valid("link_web.decide")
def _approve(world: World) -> None:
    _enter_a_code(world)
    shown = shown_request(world.sessions["user"].get("/link/confirm").get_data(as_text=True))
    response = world.submit("user", "POST", "/link/confirm", decision="approve",
                            authorization=shown)
    assert response.status_code == 302 and response.location == "/"
    assert world.scalar(select(DeviceAuthorization.status)) == "approved"


@valid("ip_match_web.link")
def _pick_a_printer(world: World) -> None:
    response = world.submit("user", "POST", f"/printers/nearby/{world.printer.device_id}/link")
    assert response.status_code == 302
    assert response.location == f"/printers/nearby/offers/{world.offer_id}"


@valid("ip_match_web.confirm")
def _confirm_the_code(world: World) -> None:
    code = world.printer.announce().json["confirmation"]["code"]
    response = world.submit("user", "POST", f"/printers/nearby/offers/{world.offer_id}/confirm",
                            code=code)
    assert response.status_code == 302
    assert world.scalar(select(Offer.status)) == "confirmed"


@valid("admin.toggle_kill_switch")
def _switch_off(world: World) -> None:
    response = world.submit("admin", "POST", "/admin/kill-switches", target="qr_code",
                            action="disable", reason="fuzzing")
    assert response.status_code == 302
    assert world.scalar(select(StrategyFlag.enabled).where(
        StrategyFlag.strategy == "qr_code")) is False


@valid("admin.incident_revoke")
def _revoke_a_window(world: World) -> None:
    from tsd_server import incident

    # Only a window that ended a minute ago is revoked: the server's clock a minute on.
    world.app.config["CLOCK"] = lambda: datetime.now(UTC) + incident.SETTLED
    ended = {**WINDOW, "until": datetime.now(UTC).isoformat()}
    response = world.submit("admin", "POST", "/admin/incident/revoke", strategy="all",
                            confirm="yes", **ended)
    assert response.status_code == 200 and "Revoked 3" in response.get_data(as_text=True)


@valid("admin.incident_revoke_account")
def _revoke_an_account(world: World) -> None:
    response = world.submit("admin", "POST", "/admin/incident/revoke-account",
                            email=world.accounts["user"][0], reason="fuzzing", confirm="yes")
    assert response.status_code == 302
    assert world.scalar(select(func.count()).select_from(Device).where(
        Device.needs_relink.is_(True))) == 2


@valid("admin.incident_lock_account")
def _lock_an_account(world: World) -> None:
    response = world.submit("admin", "POST", "/admin/incident/lock-account",
                            email=world.accounts["user"][0], reason="fuzzing", action="lock")
    assert response.status_code == 302
    assert world.scalar(select(func.count()).select_from(User).where(
        User.locked_at.is_not(None))) == 1


@valid("admin.audit")
def _filter_the_audit_log(world: World) -> None:
    response = world.submit("admin", "GET", "/admin/audit", event="link", **WINDOW)
    assert response.status_code == 200 and "printer-0003" in response.get_data(as_text=True)


@valid("admin.incident_query")
def _query_a_window(world: World) -> None:
    response = world.submit("admin", "GET", "/admin/incident", strategy="all", **WINDOW)
    assert response.status_code == 200 and "printer-0003" in response.get_data(as_text=True)


@valid("admin.incident_csv_download")
def _download_a_window(world: World) -> None:
    response = world.submit("admin", "GET", "/admin/incident/affected.csv", strategy="all",
                            **WINDOW)
    assert response.status_code == 200 and "printer-0003" in response.get_data(as_text=True)


@valid("admin_diagnostics.proxy_diagnostics")
def _ask_what_if(world: World) -> None:
    response = world.submit("admin", "GET", "/admin/diagnostics", peer="9.9.9.9",
                            forwarded_for="1.2.3.4")
    assert response.status_code == 200 and "9.9.9.9" in response.get_data(as_text=True)


@valid("qr_web.open_qr_link")
def _open_a_qr_link(world: World) -> None:
    # No Sec-Fetch-Site (as over plain http): asked first; the question's link leads on.
    asked = world.submit("user", "GET", f"/link/qr/{world.qr_token}").get_data(as_text=True)
    answer = re.search(r'href="[^"]*\?answer=([^"&]+)"', asked)
    assert answer, asked
    response = world.submit("user", "GET", f"/link/qr/{world.qr_token}", answer=answer[1])
    assert response.status_code == 200 and 'value="approve"' in response.get_data(as_text=True)
