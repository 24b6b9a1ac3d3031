"""A stranger's device posing as the printer in front of you: by the text it shows you, or
by your printer's device id.

* ip_match: the person reads a 6-digit code off the printer's screen and types it. A fake
  printer in the same household holds that code too (it was made for it); if it could
  rename itself once it has the code, the code would appear in its name, on the very page
  where it is typed. A name or model change while an offer is open ends the offer.
* Both ways in: a link re-links in place the account's printer with the same device id.
  The page says so before anyone agrees, also for a printer an incident left waiting to be
  linked again, whose owner was told to link it again and expects such a request.
"""

from __future__ import annotations

import pytest

from tests.support import ip_match_fixtures
from tests.support.ip_match_world import link_and_confirm
from tests.support.pairing import LOOSE_LIMITS, decide, enter_code, poll, started
from tsd_server import devices
from tsd_server.extensions import db
from tsd_server.models import Device

app_config = ip_match_fixtures.app_config
world = ip_match_fixtures.world

HOME = "8.8.8.8"
NOTICE = 'id="replaces-notice"'


def offer_page(person, offer_id: str) -> str:
    return person.endpoint.request("GET", f"/printers/nearby/offers/{offer_id}").body


@pytest.mark.parametrize("change", ["name", "model"])
def test_a_device_that_renames_itself_with_its_code_loses_the_offer(app, world, change):
    fake = world.printer(HOME, "Prusa MK4")
    person = world.person(HOME)
    fake.announce()
    offer = person.link(fake.device_id).json
    code = fake.announce().json["confirmation"]["code"]

    setattr(fake, change, f"Prusa MK4 - confirmation code {code}")
    assert fake.announce().json["status"] != "confirm"  # the offer is gone
    assert code not in offer_page(person, offer["offer_id"])
    assert person.confirm(offer["offer_id"], code).status == 404
    assert fake.announce().json["status"] != "linked"
    assert world.links() == []
    ended = world.audit_events("ip_match_offer_ended")
    assert [(row.outcome, row.device_uid) for row in ended] == [("voided", fake.device_id)]
    assert "changed its name or model" in ended[0].detail


def test_a_device_that_keeps_its_name_still_links(app, world):
    printer = world.printer(HOME, "Prusa MK4")
    person = world.person(HOME)
    printer.announce()
    assert link_and_confirm(person, printer)


def test_the_offer_page_says_which_printer_a_same_id_device_replaces(app, world):
    real = world.printer(HOME, "Prusa in the study")
    person = world.person(HOME)
    real.announce()
    link_and_confirm(person, real)  # linked: its announcement is gone, its id free
    fake = world.printer(HOME, "Prusa in the study")
    fake.device_id = real.device_id
    fake.announce()

    offer = person.link(fake.device_id).json
    page = offer_page(person, offer["offer_id"])
    assert NOTICE in page and "This replaces your printer" in page

    other = world.printer(HOME, "Voron")
    other.announce()
    assert NOTICE not in offer_page(person, person.link(other.device_id).json["offer_id"])


def test_with_confirmation_off_a_same_id_device_still_waits_for_the_code(app, world):
    """Otherwise it would take the printer's place on its next announce, unseen."""
    app.config["IP_MATCH_REQUIRE_CONFIRMATION"] = False
    real = world.printer(HOME, "Prusa in the study")
    person = world.person(HOME)
    real.announce()
    assert person.link(real.device_id).json["status"] == "pending_device"
    real_token = real.announce().json["access_token"]
    fake = world.printer(HOME, "Prusa in the study")
    fake.device_id = real.device_id
    fake.announce()

    offer = person.link(fake.device_id).json
    assert offer["status"] == "awaiting_confirmation"
    assert NOTICE in offer_page(person, offer["offer_id"])
    assert fake.announce().json["status"] == "confirm"  # no token without the code
    assert person.endpoint.request("GET", "/api/v1/device/me", headers={
        "Authorization": f"Bearer {real_token}"}).status == 200


def test_household_changes_are_audited_once_a_minute_per_device(app, world):
    """A device sent from two addresses in turn (IPv4 and IPv6, say) would otherwise write
    a row per announce."""
    at_a = world.printer(HOME)
    at_b = world.printer("9.9.9.9")
    at_b.device_id, at_b.secret = at_a.device_id, at_a.secret
    for _ in range(5):
        assert at_a.announce().status == 200
        assert at_b.announce().status == 200
    assert len(world.audit_events("ip_match_announce")) == 2  # registered, one change


@pytest.fixture
def pairing_owner(app, make_user, login, link_device):
    app.config.update(LOOSE_LIMITS)
    user_id, email, password = make_user(display_name="Ada")
    link_device(user_id, device_uid="printer-0002", name="Prusa in the study")
    return user_id, login(email, password, REMOTE_ADDR="1.1.1.1")


def test_the_approval_page_names_a_printer_waiting_to_be_linked_again(app, client,
                                                                     pairing_owner):
    user_id, session = pairing_owner
    with app.test_request_context():
        printer = db.session.query(Device).filter_by(owner_id=user_id).one()
        devices.revoke_token(printer, actor="cli", detail="incident", needs_relink=True)
        db.session.commit()
    answer = started(client, device_id="printer-0002", name="Prusa in the study")
    enter_code(session, answer["user_code"])

    page = session.get("/link/confirm").get_data(as_text=True)
    assert NOTICE in page and "waiting to be linked again" in page
    assert "Prusa in the study" in page


def test_no_notice_for_a_printer_the_owner_unlinked(app, client, pairing_owner):
    user_id, session = pairing_owner
    with app.test_request_context():
        printer = db.session.query(Device).filter_by(owner_id=user_id).one()
        devices.revoke_token(printer, actor=f"user:{user_id}", detail="unlinked")
        db.session.commit()
    answer = started(client, device_id="printer-0002")
    enter_code(session, answer["user_code"])
    assert NOTICE not in session.get("/link/confirm").get_data(as_text=True)
    decide(session)
    assert "access_token" in poll(client, answer["device_code"]).get_json()
