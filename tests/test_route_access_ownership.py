"""Another account's things (IDOR): a logged-in stranger (B) names what account A owns.

B is an ordinary account in A's household (so that ip_match lets B get as far as the
ownership checks) and sends real ids, codes and tokens of A's world
(tests/support/route_access.py): A's printer, A's ip_match offer and the code its printer
shows, the device flow's request A reached (its user code, QR link and the id its approval
page names), A's audit rows. Each attempt is refused, shows nothing of A's, changes no row
(refusals are audited, and B's ip_match steps count B towards the household's breaker, by
design), and where an id is guessed the answer is the one a missing id gets.
tests/test_route_access_roles.py checks who may call each route at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.support import route_access
from tests.support.pairing import FRESH_SCAN, me
from tests.support.route_access import World, changed_tables, snapshot

world = route_access.world  # the fixture
app_config = route_access.app_config

# Written by design when B is refused: audit rows, and B's sightings in the household.
REFUSAL_WRITES = ("audit_events", "ip_match_household_accounts")
MISSING = {"device_pk": str(2**31 - 1), "offer_id": "x" * 32}


@dataclass(frozen=True)
class Attempt:
    """What B sends, and how B is answered."""

    method: str
    path: str
    status: int
    form: dict = field(default_factory=dict)
    json: dict | None = None
    headers: dict = field(default_factory=dict)
    location: str | None = None  # where a refused page sends B
    hidden: tuple[str, ...] = ()  # what of A's the answer must not show


ATTEMPTS = {
    "rename A's printer": Attempt("POST", "/printers/{device_pk}/rename", 404,
                                  form={"name": "Mine now"}),
    "ask to unlink A's printer": Attempt("GET", "/printers/{device_pk}/unlink", 404,
                                         hidden=("Owner's Prusa", "printer-0001")),
    "unlink A's printer": Attempt("POST", "/printers/{device_pk}/unlink", 404),
    "unlink A's printer by the API": Attempt("DELETE", "/api/v1/devices/{device_pk}", 404),
    # A device token is no key to its owner's account, even beside a session.
    "unlink it holding its token": Attempt(
        "DELETE", "/api/v1/devices/{device_pk}", 404,
        headers={"Authorization": "Bearer {access_token}"}),
    "list printers": Attempt("GET", "/api/v1/devices", 200,
                             hidden=("Owner's Prusa", "printer-0001")),
    "see the dashboard": Attempt("GET", "/", 200, hidden=("Owner's Prusa", "printer-0001")),
    "open A's offer": Attempt("GET", "/printers/nearby/offers/{offer_id}", 302, location="/"),
    "confirm A's offer with its code": Attempt(
        "POST", "/printers/nearby/offers/{offer_id}/confirm", 302,
        form={"code": "{offer_code}"}, location="/printers/nearby"),
    "confirm A's offer by the API": Attempt(
        "POST", "/api/v1/discovery/offers/{offer_id}/confirm", 404,
        json={"code": "{offer_code}"}),
    "pick the printer A is linking": Attempt(
        "POST", "/printers/nearby/{device_id}/link", 409),
    "pick it by the API": Attempt(
        "POST", "/api/v1/discovery/nearby/{device_id}/link", 409, json={}),
    "type the code of A's request": Attempt("POST", "/link", 409, form={"code": "{user_code}"},
                                            hidden=("Voron in the garage",)),
    "open the QR link of A's request": Attempt("GET", "/link/qr/{token}", 409,
                                               headers=FRESH_SCAN,
                                               hidden=("Voron in the garage",)),
    "see A's approval page": Attempt("GET", "/link/confirm", 404,
                                     hidden=("Voron in the garage",)),
    "approve A's request": Attempt("POST", "/link/confirm", 404, form={
        "decision": "approve", "authorization": "{shown}"}),
    "deny A's request": Attempt("POST", "/link/confirm", 404, form={
        "decision": "deny", "authorization": "{shown}"}),
    "read A's audit rows": Attempt("GET", "/admin/audit?email={owner_email}", 403,
                                   hidden=("{owner_email}",)),
}


def send_as_stranger(world: World, attempt: Attempt, **values: str):
    path = attempt.path.format(**{**world.values, **values})
    return world.callers["stranger"].send(
        attempt.method, path, form=world.fill(attempt.form), json=world.fill(attempt.json),
        headers=world.fill(attempt.headers))


@pytest.mark.parametrize("name", ATTEMPTS)
def test_a_stranger_cannot_reach_or_change_what_another_account_owns(world: World, name):
    """Knowing an id, code or token of A's is not enough: B is refused, sees nothing of
    A's and changes nothing of A's."""
    attempt = ATTEMPTS[name]
    before = snapshot(world.app, skip=REFUSAL_WRITES)
    response = send_as_stranger(world, attempt)
    assert response.status_code == attempt.status, response.get_data(as_text=True)[:500]
    if attempt.location is not None:
        assert response.headers["Location"] == attempt.location
    shown = response.get_data(as_text=True)
    assert [text for text in world.fill(attempt.hidden) if text in shown] == []
    assert changed_tables(before, snapshot(world.app, skip=REFUSAL_WRITES)) == []
    assert me(world.callers["device_token"].client, world.values["access_token"]
              ).status_code == 200, "A's printer lost its access"


@pytest.mark.parametrize("name", [name for name, attempt in ATTEMPTS.items()
                                  if any(f"{{{key}}}" in attempt.path for key in MISSING)])
def test_someone_elses_id_is_answered_as_a_missing_one(world: World, name):
    """No hint whether A's printer or offer exists: the same answer as for an id nobody
    has."""
    attempt = ATTEMPTS[name]
    owned, missing = send_as_stranger(world, attempt), send_as_stranger(world, attempt,
                                                                         **MISSING)
    assert owned.status_code == missing.status_code
    assert owned.headers.get("Location") == missing.headers.get("Location")
    if owned.is_json:
        assert owned.get_json() == missing.get_json()


def test_the_owner_is_served_where_the_stranger_is_refused(world: World):
    """Positive control: the same calls as A succeed, so the refusals above are about who
    asks, not broken requests."""
    owner = world.callers["user"]
    pk, offer = world.values["device_pk"], world.values["offer_id"]
    assert owner.send("GET", f"/printers/nearby/offers/{offer}").status_code == 200
    assert owner.send("GET", "/link/confirm").status_code == 200
    listed = owner.send("GET", "/api/v1/devices").get_json()["devices"]
    assert [device["pk"] for device in listed] == [int(pk)]
    confirmed = owner.send("POST", f"/api/v1/discovery/offers/{offer}/confirm",
                           json={"code": world.values["offer_code"]})
    assert confirmed.get_json() == {"status": "confirmed"}
    assert owner.send("POST", f"/printers/{pk}/rename", form={"name": "Kept"}).status_code == 302
    assert owner.send("GET", f"/printers/{pk}/unlink").status_code == 200
    assert owner.send("DELETE", f"/api/v1/devices/{pk}").get_json() == {"status": "unlinked"}
