"""Links an account has set in motion but that have not happened yet: a web code no device
has redeemed, an approved device flow whose device has not collected its token, and an
ip_match offer its printer has not completed. Whoever
held the account's session can prepare them; removing the account's printers (the owner's
"Unlink all printers", the operator's account revoke), changing the password (or an
operator setting one) and logging out everywhere withdraw them, so they cannot be used
afterwards. Another account's are left alone. Switching a
strategy off withdraws every account's waiting links of that strategy, so none completes
once it is switched on again."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.support import ip_match_fixtures
from tests.support.pairing import (
    LOOSE_LIMITS,
    audit_rows,
    decide,
    enter_code,
    issue_code,
    me,
    poll,
    redeem,
    started,
    switch,
)

world = ip_match_fixtures.world


@pytest.fixture
def app_config():
    return {**LOOSE_LIMITS, **ip_match_fixtures.UNLIMITED}


def code_and_approval(client, session, device_id: str, ip: str) -> tuple[str, dict]:
    """A web code issued and a device flow approved from ``session``, neither used yet."""
    code = issue_code(session)["code"]
    flow = started(client, device_id=device_id, ip=ip)
    assert enter_code(session, flow["user_code"]).status_code == 302
    assert decide(session, "approve").status_code == 302
    return code, flow


@pytest.fixture
def prepared(client, make_user, login):
    """What someone with the owner's session prepares, and the same for another account."""
    uid, email, password = make_user("owner@example.org")
    thief = login(email, password, REMOTE_ADDR="6.6.6.6")
    spare_code, flow = code_and_approval(client, thief, "thief-dev-2", "6.6.6.6")
    _, other_email, other_password = make_user("other@example.org")
    other = login(other_email, other_password, REMOTE_ADDR="2.2.2.2")
    others_code, others_flow = code_and_approval(client, other, "other-dev-2", "2.2.2.2")
    return SimpleNamespace(uid=uid, email=email, password=password, spare_code=spare_code,
                           flow=flow, others_code=others_code, others_flow=others_flow)


def assert_withdrawn(app, client, clock, prepared, actor: str) -> None:
    clock.advance(seconds=10)  # past the device flow's poll interval
    late = redeem(client, prepared.spare_code, device_id="thief-dev-1", ip="6.6.6.6")
    assert late.status_code == 400 and late.get_json()["error"] == "invalid_code"
    collected = poll(client, prepared.flow["device_code"], ip="6.6.6.6")
    assert collected.status_code == 400 and collected.get_json()["error"] == "access_denied"
    withdrawn = [row for row in audit_rows(app, "revocation") if row.outcome == "withdrawn"]
    assert sorted((row.strategy, row.device_uid or "") for row in withdrawn) == [
        ("pairing_code", ""), ("pairing_code", "thief-dev-2")]
    assert {(row.actor, row.user_id) for row in withdrawn} == {(actor, prepared.uid)}
    # Another account's code and approval still work.
    theirs = redeem(client, prepared.others_code, device_id="other-dev-1", ip="2.2.2.2")
    assert theirs.status_code == 201
    token = poll(client, prepared.others_flow["device_code"], ip="2.2.2.2")
    assert token.status_code == 200
    assert me(client, token.get_json()["access_token"]).status_code == 200


def test_unlink_all_withdraws_the_accounts_codes_and_approvals(app, client, clock, login,
                                                               prepared):
    owner = login(prepared.email, prepared.password, REMOTE_ADDR="1.1.1.1")
    assert owner.form_post("/printers/unlink-all", {"confirm": "y"}).status_code == 302
    assert_withdrawn(app, client, clock, prepared, f"user:{prepared.uid}")


def test_an_account_revoke_withdraws_them(app, client, clock, prepared):
    result = app.test_cli_runner().invoke(args=[
        "incident", "revoke-account", prepared.email, "--reason", "session stolen", "--yes"])
    assert result.exit_code == 0, result.output
    assert_withdrawn(app, client, clock, prepared, "cli")


def test_a_password_change_withdraws_them(app, client, clock, login, prepared):
    owner = login(prepared.email, prepared.password, REMOTE_ADDR="1.1.1.1")
    changed = owner.form_post("/account/password", {
        "current": prepared.password, "password": "a brand new passphrase",
        "confirm": "a brand new passphrase"})
    assert changed.status_code == 302
    assert_withdrawn(app, client, clock, prepared, f"user:{prepared.uid}")


def test_logging_out_withdraws_them(app, client, clock, login, prepared):
    """Log out ends every session, the thief's too; a code the thief made before it must
    not link a printer afterwards."""
    owner = login(prepared.email, prepared.password, REMOTE_ADDR="1.1.1.1")
    assert owner.form_post("/logout", {}).status_code == 302
    assert_withdrawn(app, client, clock, prepared, f"user:{prepared.uid}")
    withdrawn = [row for row in audit_rows(app, "revocation") if row.outcome == "withdrawn"]
    assert {row.detail.rsplit(": ", 1)[1] for row in withdrawn} == {"logged out everywhere"}


def test_an_operators_new_password_withdraws_them(app, client, clock, prepared):
    result = app.test_cli_runner().invoke(args=["set-password", prepared.email],
                                          input="a brand new passphrase\n" * 2)
    assert result.exit_code == 0, result.output
    assert_withdrawn(app, client, clock, prepared, "cli")


def test_what_was_already_used_is_not_withdrawn_but_revoked(app, client, clock, login,
                                                           prepared):
    """A code redeemed and a token collected before the clean-up are links: their printers
    are revoked like any other, and nothing is counted as withdrawn twice."""
    linked = redeem(client, prepared.spare_code, device_id="thief-dev-1", ip="6.6.6.6")
    assert linked.status_code == 201
    clock.advance(seconds=10)
    collected = poll(client, prepared.flow["device_code"], ip="6.6.6.6")
    assert collected.status_code == 200
    owner = login(prepared.email, prepared.password, REMOTE_ADDR="1.1.1.1")
    assert owner.form_post("/printers/unlink-all", {"confirm": "y"}).status_code == 302
    for answer in (linked, collected):
        assert me(client, answer.get_json()["access_token"]).status_code == 401
    assert [row for row in audit_rows(app, "revocation") if row.outcome == "withdrawn"] == []


@pytest.mark.parametrize("clean_up", ["account_revoke", "log_out"])
@pytest.mark.parametrize("confirmed", [False, True])
def test_an_account_revoke_withdraws_its_ip_match_offers(app, world, confirmed, clean_up):
    """An offer made (and confirmed with the printer's code) through a stolen session would
    complete on the printer's next announce, after the clean-up, and hand the account a
    fresh token. Logging out everywhere cleans up the same way."""
    from tsd_server import incident
    from tsd_server.auth import accounts
    from tsd_server.extensions import db
    from tsd_server.models import User

    printer, person = world.printer("8.8.8.8"), world.person("8.8.8.8")
    printer.announce()
    offer = person.link(printer.device_id).json["offer_id"]
    code = printer.announce().json["confirmation"]["code"]
    if confirmed:
        assert person.confirm(offer, code).json == {"status": "confirmed"}
    with app.test_request_context():
        user = db.session.get(User, person.user_id)
        if clean_up == "log_out":
            accounts.end_sessions(user)
        else:
            incident.revoke_account(user, actor="cli", reason="session stolen")
    assert printer.announce().json["status"] == "waiting"
    assert world.links() == []
    [row] = [row for row in audit_rows(app, "revocation") if row.outcome == "withdrawn"]
    assert (row.strategy, row.device_uid, row.user_id) == (
        "ip_match", printer.device_id, person.user_id)
    # Both clean-ups also ended the session that made the offer.
    assert person.confirm(offer, code).status == 401


@pytest.mark.parametrize("target", ["pairing_code", "all"])
def test_a_switch_off_withdraws_every_accounts_waiting_links_of_the_strategy(
        app, client, clock, prepared, target):
    """The incident runbook: switch off, revoke the window's links, fix, switch on. An
    approval made during the incident and collected after the switch-on would link outside
    the window, and the revoke would never see it."""
    switch(app, target, False)
    switch(app, target, True)
    clock.advance(seconds=10)
    for code, flow, ip, device in (
            (prepared.spare_code, prepared.flow, "6.6.6.6", "thief-dev-1"),
            (prepared.others_code, prepared.others_flow, "2.2.2.2", "other-dev-1")):
        late = redeem(client, code, device_id=device, ip=ip)
        assert late.status_code == 400 and late.get_json()["error"] == "invalid_code"
        collected = poll(client, flow["device_code"], ip=ip)
        assert collected.status_code == 400 and collected.get_json()["error"] == "access_denied"
    withdrawn = [row for row in audit_rows(app, "revocation") if row.outcome == "withdrawn"]
    assert len(withdrawn) == 4 and {row.actor for row in withdrawn} == {"cli"}
    assert all(row.detail.endswith(f"{target} switched off: test") for row in withdrawn)


def test_switching_off_another_strategy_withdraws_nothing(app, client, clock, prepared):
    """QR codes off: approvals typed as pairing codes and web codes keep working."""
    switch(app, "qr_code", False)
    switch(app, "ip_match", False)
    clock.advance(seconds=10)
    assert redeem(client, prepared.spare_code, device_id="thief-dev-1",
                  ip="6.6.6.6").status_code == 201
    assert poll(client, prepared.flow["device_code"], ip="6.6.6.6").status_code == 200
    assert [row for row in audit_rows(app, "revocation") if row.outcome == "withdrawn"] == []


@pytest.mark.parametrize("target", ["ip_match", "all"])
def test_a_switch_off_withdraws_ip_match_offers(app, world, target):
    printer, person = world.printer("8.8.8.8"), world.person("8.8.8.8")
    printer.announce()
    offer = person.link(printer.device_id).json["offer_id"]
    code = printer.announce().json["confirmation"]["code"]
    assert person.confirm(offer, code).json == {"status": "confirmed"}
    switch(app, target, False)
    switch(app, target, True)
    assert printer.announce().json["status"] == "waiting"
    assert world.links() == []
    [row] = [row for row in audit_rows(app, "revocation") if row.outcome == "withdrawn"]
    assert (row.strategy, row.device_uid, row.user_id) == (
        "ip_match", printer.device_id, person.user_id)
