"""TSD_MAX_PRINTERS_PER_ACCOUNT: an account's printer list cannot grow without end (its
pages and device list cost more with every printer, and sign-up is open). A new printer
past the limit is refused by every way of linking, and nothing of the attempt is kept; a
printer the account lists already can always be re-linked."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.support.ip_match_fixtures import UNLIMITED
from tests.support.ip_match_world import InProcessEndpoint, World, layout_direct, link_and_confirm
from tests.support.pairing import (
    LOOSE_LIMITS,
    audit_rows,
    decide,
    enter_code,
    issue_code,
    me,
    poll,
    poll_error,
    redeem,
    started,
)

LIMIT = 2


@pytest.fixture
def app_config():
    return {**LOOSE_LIMITS, **UNLIMITED, "MAX_PRINTERS_PER_ACCOUNT": LIMIT}


@pytest.fixture
def owner(make_user, login):
    uid, email, password = make_user(display_name="Ada")
    return uid, login(email, password, REMOTE_ADDR="1.1.1.1")


def listed_printers(app, uid: int) -> list[str]:
    from tsd_server import devices
    from tsd_server.extensions import db
    from tsd_server.models import User

    with app.app_context():
        return sorted(d.device_uid for d in devices.devices_of(db.session.get(User, uid)))


def device_rows(app) -> int:
    from tsd_server.extensions import db
    from tsd_server.models import Device

    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Device))


def link_by_device_flow(client, session, clock, device_id: str) -> str:
    answer = started(client, device_id=device_id)
    assert enter_code(session, answer["user_code"]).status_code == 302
    assert decide(session, "approve").status_code == 302
    clock.advance(seconds=5)
    token = poll(client, answer["device_code"])
    assert token.status_code == 200, token.get_json()
    return token.get_json()["access_token"]


def device_pk(app, uid: int, device_uid: str) -> int:
    from tsd_server.extensions import db
    from tsd_server.models import Device

    with app.app_context():
        return db.session.scalar(select(Device.id).where(Device.owner_id == uid,
                                                         Device.device_uid == device_uid))


def unlink(app, session, uid: int, device_uid: str) -> None:
    pk = device_pk(app, uid, device_uid)
    assert session.form_post(f"/printers/{pk}/unlink", {}).status_code == 302


def fill(client, session, clock) -> list[str]:
    return [link_by_device_flow(client, session, clock, f"printer-{n}") for n in range(LIMIT)]


def test_the_approval_page_says_so_and_approving_decides_nothing(app, client, owner, clock):
    uid, session = owner
    fill(client, session, clock)
    answer = started(client, device_id="printer-extra")
    assert enter_code(session, answer["user_code"]).status_code == 302
    page = session.get("/link/confirm").get_data(as_text=True)
    assert f"Your account has\n  {LIMIT} printers" in page
    refused = decide(session, "approve")
    assert refused.status_code == 409 and "printer-limit-notice" in refused.get_data(as_text=True)
    clock.advance(seconds=5)
    assert poll_error(poll(client, answer["device_code"])) == "authorization_pending"
    assert listed_printers(app, uid) == ["printer-0", "printer-1"]
    # Unlink one: the same page, still bound, approves now.
    unlink(app, session, uid, "printer-0")
    assert decide(session, "approve").status_code == 302
    clock.advance(seconds=5)
    assert poll(client, answer["device_code"]).status_code == 200
    assert listed_printers(app, uid) == ["printer-1", "printer-extra"]


def test_an_approval_given_below_the_limit_links_nothing_once_it_is_reached(
        app, client, owner, clock):
    """The approval page is no guarantee: two requests approved while one place was left.
    The link itself counts, under the account's lock; the refused one is audited, keeps
    nothing, and collects its token once a place is free again."""
    uid, session = owner
    link_by_device_flow(client, session, clock, "printer-0")
    first = started(client, device_id="printer-1")
    second = started(client, device_id="printer-late")
    for answer in (first, second):
        assert enter_code(session, answer["user_code"]).status_code == 302
        assert decide(session, "approve").status_code == 302
    clock.advance(seconds=5)
    assert poll(client, first["device_code"]).status_code == 200
    rows = device_rows(app)
    refused = poll(client, second["device_code"])
    assert refused.status_code == 409 and refused.get_json()["error"] == "too_many_printers"
    assert f"{LIMIT} printers" in refused.get_json()["message"]
    assert device_rows(app) == rows
    failed = audit_rows(app, "link_failed")[-1]
    assert (failed.outcome, failed.device_uid, failed.user_id) == (
        "too_many_printers", "printer-late", uid)
    unlink(app, session, uid, "printer-0")
    clock.advance(seconds=5)
    token = poll(client, second["device_code"])
    assert token.status_code == 200, token.get_json()
    assert me(client, token.get_json()["access_token"]).status_code == 200


def test_a_listed_printer_is_re_linked_at_the_limit(app, client, owner, clock):
    uid, session = owner
    old_token = fill(client, session, clock)[0]
    new_token = link_by_device_flow(client, session, clock, "printer-0")
    assert me(client, new_token).status_code == 200
    assert me(client, old_token).status_code == 401
    assert listed_printers(app, uid) == ["printer-0", "printer-1"]


def test_a_web_code_redeemed_past_the_limit_stays_unused(app, client, owner, clock):
    uid, session = owner
    fill(client, session, clock)
    code = issue_code(session)["code"]
    refused = redeem(client, code, device_id="printer-extra")
    assert refused.status_code == 409 and refused.get_json()["error"] == "too_many_printers"
    assert listed_printers(app, uid) == ["printer-0", "printer-1"]
    # A printer the account lists already takes the same code: it was not spent.
    assert redeem(client, code, device_id="printer-1").status_code == 201


def test_ip_match_refuses_the_offer_and_the_link(app, clock):
    world = World(app, lambda home: InProcessEndpoint(app, home, layout_direct))
    printers = [world.printer("8.8.8.8", f"Mk4 {n}") for n in range(LIMIT + 1)]
    anna = world.person("8.8.8.8")
    for printer in printers:
        assert printer.announce().status == 200
    link_and_confirm(anna, printers[0])
    # An offer made with a place left, completed after the place went: refused at the link.
    late = anna.link(printers[2].device_id)
    assert late.status == 200, late.body
    link_and_confirm(anna, printers[1])
    shown = printers[2].announce().json
    assert anna.confirm(late.json["offer_id"], shown["confirmation"]["code"]).status == 200
    rows = device_rows(app)
    refused = printers[2].announce()
    assert refused.status == 409 and refused.json["error"] == "too_many_printers", refused.body
    assert device_rows(app) == rows
    # A new offer is refused at once, and audited.
    again = anna.link(printers[2].device_id)
    assert again.status == 409 and again.json["error"] == "too_many_printers", again.body
    assert world.audit_events("link_failed")[-1].outcome == "too_many_printers"
    # The confirmed offer stayed: once a place is free, the printer's next announce links.
    pk = device_pk(app, anna.user_id, printers[0].device_id)
    assert anna.endpoint.request("POST", f"/printers/{pk}/unlink",
                                 data={"csrf_token": anna.csrf}).status == 302
    linked = printers[2].announce()
    assert linked.status == 200 and linked.json["status"] == "linked", linked.body
