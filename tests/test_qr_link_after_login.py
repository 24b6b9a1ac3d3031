"""QR links through the login form: ``/login?next=/link/qr/<token>``.

The login form's redirect comes back same-origin, which a QR link trusts. So only a link
this browser opened itself before logging in (scanned, typed, or this site's own question
page) comes back to the approval page; any other QR ``next`` leads to the question
"Did you just scan your printer's QR code?", with nothing spent or bound. Over plain http
the browser says nothing, so a logged-out scan is asked about there, once, after logging in.
"""

from __future__ import annotations

import pytest

from tests.conftest import CSRF_META
from tests.support.pairing import (
    LOOSE_LIMITS,
    audit_rows,
    decide,
    poll,
    qr_path,
    question_link,
    started,
)

ASKS = "Did you just scan"
APPROVAL_FORM = 'value="approve"'


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


class Browser:
    """A test client that says where each navigation came from, like a browser does."""

    def __init__(self, app):
        self.client = app.test_client()
        self.csrf = ""

    def get(self, path: str, source: str | None = "same-origin", **kwargs):
        headers = {} if source is None else {"Sec-Fetch-Site": source}
        response = self.client.get(path, headers=headers, **kwargs)
        found = CSRF_META.search(response.get_data(as_text=True))
        if found:
            self.csrf = found.group(1)
        return response

    def log_in(self, login_url: str, email: str, password: str, source: str = "same-origin"):
        """Open the login page (from ``source``), then submit it: the form posts to its own
        address, ``next`` included."""
        page = self.get(login_url, source=source)
        assert page.status_code == 200
        return self.client.post(login_url, data={"email": email, "password": password,
                                                 "csrf_token": self.csrf},
                                headers={"Sec-Fetch-Site": "same-origin"})

    def form_post(self, path: str, data: dict):
        return self.client.post(path, data={"csrf_token": self.csrf, **data},
                                headers={"Sec-Fetch-Site": "same-origin"})



def opened_at(app, device_code: str):
    from sqlalchemy import select

    from tsd_server.discovery.pairing import codes
    from tsd_server.extensions import db
    from tsd_server.models import DeviceAuthorization

    with app.app_context():
        return db.session.scalar(select(DeviceAuthorization.qr_opened_at).where(
            DeviceAuthorization.device_code_hash == codes.secret_hash(device_code)))


def test_a_qr_link_sent_through_the_login_form_asks_first(app, client, make_user, clock):
    """The phishing case: another site sends the person to our login form with its own
    printer's QR link as ``next``. After logging in they meet the question, not the
    approval page; the link is not spent and Approve has nothing to approve."""
    uid, email, password = make_user("victim@example.org")
    answer = started(client, device_id="attacker-printer")
    link = qr_path(answer)
    victim = Browser(app)

    posted = victim.log_in("/login?next=" + link, email, password, source="cross-site")
    assert posted.status_code == 302
    assert posted.headers["Location"] == link + "?asked=login"
    page = victim.get(posted.headers["Location"])
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and ASKS in html and APPROVAL_FORM not in html
    assert f'href="{link}?answer=' in html
    assert opened_at(app, answer["device_code"]) is None
    assert decide(victim, "approve").status_code == 404
    clock.advance(seconds=5)
    assert poll(client, answer["device_code"]).get_json()["error"] == "authorization_pending"
    [row] = audit_rows(app, "qr_link_cross_site")
    assert (row.user_id, row.device_uid, row.outcome, row.detail) == (
        uid, "attacker-printer", "held", "opened through the login form")
    # The question's own link still leads on, for someone who did scan it.
    followed = victim.get(link)
    assert followed.status_code == 200 and APPROVAL_FORM in followed.get_data(as_text=True)


@pytest.mark.parametrize("disguise", [
    "{link}?then=more", "{link}#approve", "/link//qr/{token}", "/link/./qr/{token}",
    "/printers/../link/qr/{token}", "/printers/%2e%2e/link/qr/{token}",
    "/link/%71r/{token}", "/link%2Fqr%2F{token}", "/%2Flink/qr/{token}",
])
def test_a_disguised_qr_link_in_next_asks_first_too(app, client, make_user, disguise):
    """Paths a browser and this server take to the same QR link are read as that link."""
    _, email, password = make_user()
    answer = started(client)
    link = qr_path(answer)
    target = disguise.format(link=link, token=link.rsplit("/", 1)[1])
    posted = Browser(app).log_in("/login?next=" + target.replace("%", "%25")
                                 .replace("#", "%23").replace("?", "%3F")
                                 .replace("&", "%26"), email, password, source="cross-site")
    assert posted.headers["Location"] == link + "?asked=login"
    assert opened_at(app, answer["device_code"]) is None


def test_scanning_while_logged_out_logs_in_and_comes_back_to_the_approval_page(
        app, client, make_user):
    """The journey the question must not get in the way of: a phone that is not logged in
    scans the printer's QR code (``none``), logs in, and lands on the approval page at
    once."""
    _, email, password = make_user()
    answer = started(client, device_id="my-printer")
    link = qr_path(answer)
    phone = Browser(app)

    scanned = phone.get(link, source="none")
    assert scanned.status_code == 302
    login_url = scanned.headers["Location"]
    assert login_url.startswith("/login?next=")
    posted = phone.log_in(login_url, email, password)
    assert posted.headers["Location"] == link
    page = phone.get(link)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and APPROVAL_FORM in html and ASKS not in html
    assert audit_rows(app, "qr_link_cross_site") == []
    assert decide(phone, "approve").status_code == 302


def test_over_plain_http_a_logged_out_scan_is_asked_about_once_after_logging_in(
        app, client, make_user, clock):
    """No Sec-Fetch-Site anywhere (a plain-http server): the scan cannot say the person
    started it, so it goes to the login form without a note and comes back to the
    question, once; its link leads to the approval page, and approving links the
    printer. Another site sending a logged-out person to the link ends the same way:
    at the question, with nothing spent until it is answered."""
    _, email, password = make_user()
    answer = started(client, device_id="my-printer")
    link = qr_path(answer)
    phone = Browser(app)

    scanned = phone.get(link, source=None)
    assert scanned.status_code == 302 and scanned.headers["Location"].startswith("/login?next=")
    posted = phone.log_in(scanned.headers["Location"], email, password, source=None)
    assert posted.headers["Location"] == link + "?asked=login"
    asked = phone.get(posted.headers["Location"], source=None)
    html = asked.get_data(as_text=True)
    assert asked.status_code == 200 and ASKS in html and APPROVAL_FORM not in html
    assert opened_at(app, answer["device_code"]) is None
    [row] = audit_rows(app, "qr_link_cross_site")
    assert (row.device_uid, row.detail) == ("my-printer", "Sec-Fetch-Site: not sent")
    page = phone.get(question_link(html), source=None)
    assert page.status_code == 200 and APPROVAL_FORM in page.get_data(as_text=True)
    assert decide(phone, "approve").status_code == 302
    clock.advance(seconds=5)
    assert poll(client, answer["device_code"]).status_code == 200


def test_a_scan_that_another_app_opened_logged_out_is_asked_about_once(app, client, make_user):
    """Firefox reports a camera app's link as cross-site: the question comes before the
    login redirect, and its answer carries through the login form without a second one."""
    _, email, password = make_user()
    answer = started(client)
    link = qr_path(answer)
    phone = Browser(app)

    asked = phone.get(link, source="cross-site")
    assert ASKS in asked.get_data(as_text=True)
    to_login = phone.get(link)  # the question's own link: same-origin
    assert to_login.status_code == 302
    posted = phone.log_in(to_login.headers["Location"], email, password)
    assert posted.headers["Location"] == link
    assert APPROVAL_FORM in phone.get(link).get_data(as_text=True)


def test_only_the_link_opened_before_logging_in_comes_back_at_once(app, client, make_user):
    """Having opened one's own QR link logged out does not wave another one through."""
    _, email, password = make_user()
    mine, theirs = qr_path(started(client, device_id="printer-mine")), qr_path(
        started(client, device_id="printer-theirs"))
    phone = Browser(app)
    assert phone.get(mine, source="none").status_code == 302

    posted = phone.log_in("/login?next=" + theirs, email, password, source="cross-site")
    assert posted.headers["Location"] == theirs + "?asked=login"


def test_the_note_of_a_logged_out_open_does_not_outlive_the_login(app, client, make_user):
    """One login per note: after it, the same link sent through the login form again asks."""
    _, email, password = make_user()
    link = qr_path(started(client))
    phone = Browser(app)
    login_url = phone.get(link, source="none").headers["Location"]
    assert phone.log_in(login_url, email, password).headers["Location"] == link

    again = phone.log_in(login_url, email, password, source="cross-site")
    assert again.headers["Location"] == link + "?asked=login"


def test_other_next_targets_are_left_alone(app, make_user):
    _, email, password = make_user()
    for target in ("/printers/add/qr", "/link", "/link/confirm", "/printers/add?tab=qr"):
        posted = Browser(app).log_in("/login?next=" + target.replace("?", "%3F"), email,
                                     password)
        assert posted.headers["Location"] == target


@pytest.mark.parametrize("prefix", ["/tsd", "/my%20app"])
def test_under_a_path_prefix_the_qr_link_in_next_asks_first_too(app, client, make_user,
                                                                 prefix):
    """Served under a prefix (X-Forwarded-Prefix: the app sees it as SCRIPT_NAME, escapes
    and all), the browser reaches the QR link at <prefix>/link/qr/<token>: that is the QR
    link too."""
    _, email, password = make_user()
    answer = started(client)
    link = qr_path(answer)
    victim = Browser(app)
    target = prefix.replace("%", "%25") + link
    environ = {"SCRIPT_NAME": prefix}
    victim.get("/login?next=" + target, source="cross-site", environ_overrides=environ)
    posted = victim.client.post("/login?next=" + target, environ_overrides=environ, data={
        "email": email, "password": password, "csrf_token": victim.csrf},
        headers={"Sec-Fetch-Site": "same-origin"})
    assert posted.status_code == 302
    assert posted.headers["Location"].endswith(link + "?asked=login")
    assert opened_at(app, answer["device_code"]) is None
