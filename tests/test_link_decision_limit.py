"""Answers on the approval page are rate-limited, per address and per account.

Every answer is audited (approved, denied, ``page_changed``, ``too_late``), and the request
an approval page is about lives in the signed session cookie, which stays valid when
replayed: without a limit, one cookie sent again and again wrote one audit row per request
(a reviewer wrote 300 in 0.7 s), filling the disk and the incident log.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.support.pairing import enter_code, started
from tsd_server.extensions import db
from tsd_server.models import AuditEvent

LIMIT = 3


@pytest.fixture
def app_config():
    return {"LINK_DECISION_LIMIT": f"{LIMIT} per 10 minutes"}


def page_changed_rows(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.outcome == "page_changed"))


def replayed_answers(session, count: int, addresses: list[str]) -> list[int]:
    """Answer from a page about another request, each time with the cookie that still
    holds the binding, from each address in turn."""
    cookie = session.client.get_cookie("session").value
    statuses = []
    for number in range(count):
        session.client.set_cookie("session", cookie)
        response = session.form_post(
            "/link/confirm", {"decision": "deny", "authorization": "0.x"},
            environ_base={"REMOTE_ADDR": addresses[number % len(addresses)]})
        statuses.append(response.status_code)
    return statuses


@pytest.mark.parametrize("addresses", [["8.8.8.8"], ["8.8.8.8", "9.9.9.9", "1.0.0.1"]],
                         ids=["one address", "the account from many addresses"])
def test_a_replayed_approval_cookie_is_refused_after_the_limit(app, client, make_user, login,
                                                               addresses):
    answer = started(client)
    _, email, password = make_user()
    person = login(email, password, REMOTE_ADDR=addresses[0])
    assert enter_code(person, answer["user_code"]).status_code == 302  # bound in the cookie

    statuses = replayed_answers(person, LIMIT + 5, addresses)

    assert statuses == [409] * LIMIT + [429] * 5
    assert page_changed_rows(app) == LIMIT  # the refused answers wrote nothing


def test_the_address_limit_holds_across_accounts(app, client, make_user, login):
    rows = []
    for number in range(LIMIT + 1):
        answer = started(client, device_id=f"printer-{number:04d}")
        _, email, password = make_user(email=f"person{number}@example.org")
        # Each types the code from an address of its own (typed codes have their own
        # limit per address), then answers from the same one.
        person = login(email, password, REMOTE_ADDR=f"1.1.{number}.1")
        assert enter_code(person, answer["user_code"]).status_code == 302
        rows.append(replayed_answers(person, 1, ["8.8.8.8"])[0])
    assert rows == [409] * LIMIT + [429]
