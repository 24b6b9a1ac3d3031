"""The link service: the only way a Device and its token come to exist."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tests.support.apps import another_app
from tests.support.link_race import TWIN_TOKEN, twin_committed_before_the_insert
from tsd_server.auth.tokens import token_hash
from tsd_server.client_address import ClientAddress
from tsd_server.clock import utcnow
from tsd_server.discovery import kill_switch
from tsd_server.discovery.link_service import LinkConflict, link_device
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, Device, User

ADDRESS = ClientAddress(client_ip="9.9.9.9", peer_ip="1.1.1.1", forwarded_for=("9.9.9.9",),
                        household="9.9.9.9/32")


def link(owner_id: int, strategy: str = "pairing_code", device_uid: str = "printer-0001",
         **extra):
    return link_device(owner=db.session.get(User, owner_id), device_uid=device_uid,
                       name=extra.pop("name", "Prusa"), model="Mk4", strategy=strategy,
                       actor=f"user:{owner_id}", address=extra.pop("address", ADDRESS), **extra)


def test_link_creates_device_token_and_audit_row_together(app, make_user, clock):
    uid, _, _ = make_user()
    with app.test_request_context():
        result = link(uid, strategy="qr_code")
        device_pk = result.device.id
        token = result.access_token
    with app.app_context():
        device = db.session.get(Device, device_pk)
        assert device.token_hash == token_hash(token) and token not in (device.token_hash or "")
        assert (device.linked_via, device.linked_from_ip, device.linked_at) == \
            ("qr_code", "9.9.9.9", clock.now)
        row = db.session.scalar(select(AuditEvent).where(AuditEvent.event == "link"))
        assert (row.actor, row.user_id, row.device_id, row.strategy) == \
            (f"user:{uid}", uid, device_pk, "qr_code")
        assert (row.client_ip, row.peer_ip, row.forwarded_for, row.household) == \
            ("9.9.9.9", "1.1.1.1", ["9.9.9.9"], "9.9.9.9/32")
        assert row.at == device.linked_at


def test_audit_time_equals_linked_at_with_the_real_clock(app, make_user):
    """Incident windows read both; they must agree to the microsecond."""
    uid, _, _ = make_user()
    with app.test_request_context():
        device_pk = link(uid).device.id
    with app.app_context():
        row = db.session.scalar(select(AuditEvent).where(AuditEvent.event == "link"))
        assert row.at == db.session.get(Device, device_pk).linked_at


def test_relink_replaces_token_and_clears_needs_relink(app, make_user, client):
    uid, _, _ = make_user()
    with app.test_request_context():
        first = link(uid)
        first.device.needs_relink = True
        first.device.token_hash = None
        db.session.commit()
        second = link(uid, strategy="ip_match")
        assert second.device.id == first.device.id
        assert second.device.needs_relink is False
    assert client.get("/api/v1/device/me", headers={
        "Authorization": f"Bearer {first.access_token}"}).status_code == 401
    assert client.get("/api/v1/device/me", headers={
        "Authorization": f"Bearer {second.access_token}"}).status_code == 200


def test_address_defaults_to_the_current_request(app, make_user):
    uid, _, _ = make_user()
    with app.test_request_context(environ_base={"REMOTE_ADDR": "8.8.8.8"}):
        device_pk = link(uid, address=None).device.id
    with app.app_context():
        assert db.session.get(Device, device_pk).linked_from_ip == "8.8.8.8"
        row = db.session.scalar(select(AuditEvent).where(AuditEvent.event == "link"))
        assert row.client_ip == "8.8.8.8"


def test_offer_begun_before_switch_off_cannot_complete_after(app, database, make_user):
    """The process still has "on" cached; another process switches off; linking refuses."""
    app.config["KILL_SWITCH_CACHE_SECONDS"] = 600  # this process will not re-read by itself
    uid, _, _ = make_user()
    with app.test_request_context():
        kill_switch.require_enabled("pairing_code")  # the offer/code was handed out: "on"
    with another_app(database) as other:
        with other.app_context():
            kill_switch.set_flag("pairing_code", enabled=False, reason="incident", actor="cli")
    with app.test_request_context():
        assert kill_switch.is_enabled("pairing_code"), "cache expired: test proves nothing"
        with pytest.raises(kill_switch.StrategyDisabled) as refused:
            link(uid)
        assert refused.value.status == 503 and refused.value.code == "strategy_disabled"
    with app.app_context():
        assert db.session.scalar(select(Device)) is None
        row = db.session.scalar(select(AuditEvent).where(AuditEvent.event == "link_failed"))
        assert (row.outcome, row.strategy, row.user_id, row.device_uid, row.actor) == \
            ("strategy_disabled", "pairing_code", uid, "printer-0001", f"user:{uid}")
        assert row.detail == "incident" and row.client_ip == "9.9.9.9"


def test_refusal_discards_the_callers_pending_changes(app, make_user):
    """A strategy that marked its code used before linking does not leave that half-done."""
    uid, _, _ = make_user(display_name="Before")
    with app.test_request_context():
        kill_switch.set_flag("qr_code", enabled=False, reason="off", actor="cli")
        db.session.get(User, uid).display_name = "Pending change"
        with pytest.raises(kill_switch.StrategyDisabled):
            link(uid, strategy="qr_code")
    with app.app_context():
        assert db.session.get(User, uid).display_name == "Before"


def test_callers_pending_changes_commit_with_the_link(app, make_user):
    uid, _, _ = make_user(display_name="Before")
    with app.test_request_context():
        db.session.get(User, uid).display_name = "Committed with the link"
        link(uid)
    with app.app_context():
        assert db.session.get(User, uid).display_name == "Committed with the link"


def test_deployment_switch_refuses_links(app, database, make_user):
    uid, _, _ = make_user()
    with another_app(database, DISCOVERY_DISABLED="all") as other:
        with other.test_request_context():
            kill_switch.set_flag("all", enabled=True, reason="override attempt", actor="cli")
            for strategy in ("ip_match", "pairing_code", "qr_code"):
                with pytest.raises(kill_switch.StrategyDisabled) as refused:
                    link(uid, strategy=strategy)
                assert refused.value.extra["disabled_by"] == "deployment"
    with app.app_context():
        assert db.session.scalar(select(Device)) is None


def test_unreadable_flag_store_refuses_links_and_audits_them(app, make_user):
    from tests.support.apps import flags_table_renamed

    uid, _, _ = make_user()
    with flags_table_renamed(app), app.test_request_context():
        with pytest.raises(kill_switch.StrategyDisabled) as refused:
            link(uid, strategy="qr_code")
        assert refused.value.extra["disabled_by"] == "flag_store_unreadable"
    with app.app_context():
        assert db.session.scalar(select(Device)) is None
        row = db.session.scalar(select(AuditEvent).where(AuditEvent.event == "link_failed"))
        assert (row.outcome, row.strategy) == ("strategy_disabled", "qr_code")


def test_unknown_strategy_name_cannot_link(app, make_user):
    uid, _, _ = make_user()
    with app.test_request_context():
        with pytest.raises(kill_switch.StrategyDisabled):
            link(uid, strategy="ip-match")
    with app.app_context():
        assert db.session.scalar(select(Device)) is None


def test_revoked_token_is_refused_by_device_calls(app, make_user, link_device, client):
    from tsd_server import devices

    uid, _, _ = make_user()
    device_pk, token = link_device(uid)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/device/me", headers=headers).status_code == 200
    with app.app_context():
        devices.revoke_token(db.session.get(Device, device_pk), actor="cli", detail="test",
                             needs_relink=True)
        db.session.commit()
    response = client.get("/api/v1/device/me", headers=headers)
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"


# One row per printer and account ------------------------------------------------------------


def test_the_database_refuses_a_second_row_for_one_printer_of_one_account(app, make_user):
    """The unique index itself, so no code path (bulk tools, a future strategy) can add one."""
    uid, _, _ = make_user()
    other, _, _ = make_user()
    with app.test_request_context():
        link(uid)
        link(other)  # the same device id under another account is another printer
        db.session.add(Device(owner_id=uid, device_uid="printer-0001", name="Twin",
                              linked_via="qr_code", linked_at=utcnow()))
        with pytest.raises(IntegrityError):
            db.session.flush()
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(Device)) == 2


def test_a_row_that_appears_between_read_and_insert_is_a_conflict_and_audited(app, make_user):
    uid, _, _ = make_user()
    with app.test_request_context():
        with twin_committed_before_the_insert(uid, "printer-0001") as inserted:
            with pytest.raises(LinkConflict) as refused:
                link(uid, strategy="pairing_code")
        assert inserted, "the twin was never written: the test proved nothing"
        assert (refused.value.status, refused.value.code) == (409, "link_conflict")
    with app.app_context():
        rows = db.session.scalars(select(Device)).all()
        assert [(d.name, d.token_hash) for d in rows] == [("Twin", token_hash(TWIN_TOKEN))]
        failed = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event == "link_failed")).all()
        assert [(r.outcome, r.strategy, r.user_id, r.device_uid) for r in failed] == \
            [("conflict", "pairing_code", uid, "printer-0001")]
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.event == "link")) is None


def test_linking_a_printer_again_keeps_one_row_and_one_working_token(app, make_user, client):
    uid, _, _ = make_user()
    with app.test_request_context():
        tokens = [link(uid, strategy="pairing_code", detail="redeemed a code").access_token,
                  link(uid, strategy="qr_code", detail="approved by QR").access_token]
        assert db.session.scalar(select(func.count()).select_from(Device)) == 1
        # The strategy's own detail stays, and the audit trail says a token was replaced.
        assert [row.detail for row in db.session.scalars(select(AuditEvent).where(
            AuditEvent.event == "link").order_by(AuditEvent.id))] == \
            ["redeemed a code", "approved by QR; re-linked: the previous token stopped working"]
    answers = [client.get("/api/v1/device/me", headers={"Authorization": f"Bearer {t}"})
               for t in tokens]
    assert [a.status_code for a in answers] == [401, 200]


@pytest.fixture
def loose_limits(app):
    from tests.support.pairing import LOOSE_LIMITS

    app.config.update(LOOSE_LIMITS)


def test_a_redeemed_code_links_in_one_commit_and_nothing_is_sent_after_it(
        app, client, make_user, login, loose_limits):
    """Once the printer is linked, a failing round trip (the database restarting, a
    terminated backend) must not turn the answer into a 500: the token of a link already
    made would be lost, and the printer's retry spend nothing but a breaker count."""
    from tests.support.pairing import issue_code, redeem
    from tests.support.sent_statements import SESSION, sent_statements
    from tsd_server.models import PairingCode

    _, email, password = make_user()
    code = issue_code(login(email, password))["code"]
    with sent_statements(app, commits=True) as sent:
        answer = redeem(client, code)
    assert answer.status_code == 201, answer.get_json()
    assert sent[SESSION].count("COMMIT") == 1 and sent[SESSION][-1] == "COMMIT", sent[SESSION]
    with app.app_context():
        spent = db.session.scalar(select(PairingCode))
        device = db.session.scalar(select(Device))
        assert spent.device_id == device.id and spent.used_at is not None
    assert answer.get_json()["device"]["id"] == device.device_uid


def test_a_collected_device_flow_links_in_one_commit_and_nothing_is_sent_after_it(
        app, client, make_user, login, clock, loose_limits):
    from tests.support.pairing import decide, enter_code, poll, started
    from tests.support.sent_statements import SESSION, sent_statements
    from tsd_server.models import DeviceAuthorization

    _, email, password = make_user()
    session = login(email, password, REMOTE_ADDR="1.1.1.1")
    answer = started(client)
    enter_code(session, answer["user_code"])
    decide(session, "approve")
    clock.advance(seconds=5)
    with sent_statements(app, commits=True) as sent:
        collected = poll(client, answer["device_code"])
    assert collected.status_code == 200, collected.get_json()
    assert sent[SESSION].count("COMMIT") == 1 and sent[SESSION][-1] == "COMMIT", sent[SESSION]
    with app.app_context():
        request_row = db.session.scalar(select(DeviceAuthorization))
        device = db.session.scalar(select(Device))
        assert request_row.device_id == device.id
    assert collected.get_json()["device"]["id"] == device.device_uid
