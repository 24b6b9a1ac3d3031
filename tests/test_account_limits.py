"""The account pages' rate limits: log-in per email typed as well as per address, and every
account limit read from its setting (tsd_server/auth/limits.py)."""

from __future__ import annotations

import pytest

from tests.conftest import CSRF_META
from tests.support.pairing import audit_rows
from tsd_server.extensions import limiter

PASSWORD = "correct horse battery"


@pytest.fixture
def app_config(request):
    return getattr(request, "param", {})


def log_in(app, email: str, password: str, address: str) -> int:
    """One log-in attempt from a fresh browser at ``address``; the answer's status."""
    client = app.test_client()
    environ = {"REMOTE_ADDR": address}
    page = client.get("/login", environ_base=environ).get_data(as_text=True)
    token = CSRF_META.search(page).group(1)
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": token},
                       environ_base=environ).status_code


def test_many_addresses_guessing_one_account_are_stopped_by_its_email(app, make_user):
    """A botnet, one guess per address: the per-address limit never fires, the email's does,
    and then the right password is refused too (the guesser cannot tell it was right)."""
    _, email, _ = make_user(password=PASSWORD)
    guesses = [log_in(app, email, f"guess {i}", f"8.8.{i}.1") for i in range(25)]
    assert guesses == [400] * 25
    assert log_in(app, email, PASSWORD, "9.9.9.9") == 429
    # The refusal is audited, under a key that does not hold the email.
    refusal = audit_rows(app, "rate_limited")[-1]
    assert refusal.client_ip == "9.9.9.9"
    assert "auth.login (email:" in refusal.detail and email not in refusal.detail
    # Spelt otherwise, it is the same email and the same budget.
    assert log_in(app, f"  {email.upper()} ", PASSWORD, "9.9.9.10") == 429
    # Another account, from an address that took part, is not held up.
    _, other, _ = make_user(password=PASSWORD)
    assert log_in(app, other, PASSWORD, "8.8.0.1") == 302


def test_an_unknown_email_is_limited_exactly_like_a_known_one(app, make_user):
    """A 429 must not tell who has an account."""
    _, known, _ = make_user(password=PASSWORD)
    unknown = "nobody-here@example.org"
    for network, email in ((1, known), (2, unknown)):
        answers = [log_in(app, email, "wrong", f"8.{network}.{i}.1") for i in range(26)]
        assert answers == [400] * 25 + [429], email


def test_the_limit_storage_holds_no_email_address(app, make_user):
    _, email, _ = make_user(password=PASSWORD)
    assert log_in(app, email, "wrong", "8.8.8.8") == 400
    keys = list(limiter.limiter.storage.events)
    assert any("email:" in key for key in keys), keys
    local_part = email.split("@")[0]
    assert not any(local_part in key for key in keys), keys


@pytest.mark.parametrize("app_config", [{"LOGIN_LIMIT_PER_IP": "2 per minute",
                                         "LOGIN_LIMIT_PER_EMAIL": "1000 per minute"}],
                         indirect=True)
def test_the_login_limit_per_address_is_the_setting(app, make_user):
    _, email, _ = make_user(password=PASSWORD)
    answers = [log_in(app, email, "wrong", "8.8.8.8") for _ in range(3)]
    assert answers == [400, 400, 429]


@pytest.mark.parametrize("app_config", [{"LOGIN_LIMIT_PER_EMAIL": "3 per minute"}],
                         indirect=True)
def test_the_login_limit_per_email_is_the_setting(app, make_user):
    _, email, _ = make_user(password=PASSWORD)
    answers = [log_in(app, email, "wrong", f"8.8.{i}.1") for i in range(4)]
    assert answers == [400, 400, 400, 429]


@pytest.mark.parametrize("app_config", [{"SIGN_UP_LIMIT_PER_IP": "1 per minute"}],
                         indirect=True)
def test_the_sign_up_limit_is_the_setting(app):
    def sign_up(number: int, address: str) -> int:
        client = app.test_client()
        environ = {"REMOTE_ADDR": address}
        page = client.get("/register", environ_base=environ).get_data(as_text=True)
        return client.post("/register", data={
            "email": f"new{number}@example.org", "display_name": "New", "password": PASSWORD,
            "confirm": PASSWORD, "csrf_token": CSRF_META.search(page).group(1),
        }, environ_base=environ).status_code

    assert [sign_up(1, "8.8.8.8"), sign_up(2, "8.8.8.8")] == [302, 429]
    assert sign_up(3, "9.9.9.9") == 302


@pytest.mark.parametrize("app_config", [{"PASSWORD_CHANGE_LIMIT_PER_ACCOUNT": "1 per minute"}],
                         indirect=True)
def test_the_password_change_limit_is_the_setting(app, make_user, login):
    _, email, _ = make_user(password=PASSWORD)

    def change(address: str) -> int:
        session = login(email, PASSWORD, REMOTE_ADDR=address)
        return session.form_post("/account/password", {
            "current": "not it", "password": "a new password 1", "confirm": "a new password 1",
        }).status_code

    assert [change("8.8.8.8"), change("9.9.9.9")] == [400, 429]


@pytest.mark.parametrize("app_config", [{"LOGIN_LIMIT_PER_IP": "2 per minute"}], indirect=True)
def test_accounts_from_one_address_share_its_password_change_budget(app, make_user, login):
    """Accounts are cheap (sign-up is open); each change attempt costs a password hash."""
    def change(number: int) -> int:
        _, email, _ = make_user(email=f"person{number}@example.org", password=PASSWORD)
        session = login(email, PASSWORD, REMOTE_ADDR=f"1.1.{number}.1")  # log-ins elsewhere
        return session.form_post("/account/password", {
            "current": "not it", "password": "a new password 1", "confirm": "a new password 1",
        }, environ_base={"REMOTE_ADDR": "8.8.8.8"}).status_code

    assert [change(1), change(2), change(3)] == [400, 400, 429]


@pytest.mark.parametrize("app_config", [{"PASSWORD_HASH_LIMIT_PER_NETWORK": "4 per minute"}],
                         indirect=True)
def test_a_password_change_counts_twice_against_the_network_budget(app, make_user, login):
    """A change that passes hashes twice (current password, new one): counted once, the
    network's budget would allow twice the hashes docs/security.md names."""
    def change(number: int) -> int:
        _, email, _ = make_user(email=f"person{number}@example.org", password=PASSWORD)
        session = login(email, PASSWORD, REMOTE_ADDR=f"1.1.{number}.1")  # log-ins elsewhere
        return session.form_post("/account/password", {
            "current": PASSWORD, "password": f"a new password {number}",
            "confirm": f"a new password {number}",
        }, environ_base={"REMOTE_ADDR": "8.8.8.8"}).status_code

    assert [change(1), change(2), change(3)] == [302, 302, 429]


@pytest.mark.parametrize("app_config", [{"PASSWORD_HASH_LIMIT_PER_NETWORK": "6 per minute",
                                         "LOGIN_LIMIT_PER_EMAIL": "1000 per minute"}],
                         indirect=True)
def test_one_ipv6_customer_cannot_multiply_the_password_hashes_by_its_64s(app, make_user):
    """A /48 holds 65,536 /64s, each with a log-in budget of its own; log-ins, sign-ups and
    password changes from all of them share one budget more (black-box test: 9 log-ins a
    second from 256 /64s of one /56 were all answered after a password hash, and a printer's
    call waited 0.9 s). Another /48, and an IPv4 address, keep theirs."""
    _, email, _ = make_user(password=PASSWORD)
    # Wrong guesses from six /64s of 2001:db8:1::/48, then a seventh: its own /64 is fresh.
    answers = [log_in(app, email, "wrong", f"2001:db8:1:{n:x}::1") for n in range(7)]
    assert answers == [400] * 6 + [429]
    assert log_in(app, email, PASSWORD, "2001:db8:1:ffff::2") == 429  # the right one too
    assert log_in(app, email, PASSWORD, "2001:db8:2::1") == 302  # another customer
    assert log_in(app, email, PASSWORD, "8.8.8.8") == 302
    refusal = audit_rows(app, "rate_limited")[-1]
    assert "net:2001:db8:1::/48" in refusal.detail, refusal.detail
    # A sign-up also hashes a password: the same budget, spent.
    client, environ = app.test_client(), {"REMOTE_ADDR": "2001:db8:1:abcd::1"}
    page = client.get("/register", environ_base=environ).get_data(as_text=True)
    assert client.post("/register", data={
        "email": "new@example.org", "display_name": "New", "password": PASSWORD,
        "confirm": PASSWORD, "csrf_token": CSRF_META.search(page).group(1),
    }, environ_base=environ).status_code == 429
