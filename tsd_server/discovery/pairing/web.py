"""Pages that belong to one strategy each (the registry answers 503 while it is off).

pairing_code: ``/printers/add/code`` (get a code to type into the printer) and ``/link``
(type the code the printer shows). qr_code: ``/link/qr/<token>`` (the link inside the QR
code) and ``/printers/add/qr`` (how it works). Both code paths end on the shared approval
page (``link_pages``); nothing is approved by typing a code or opening a link alone.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from werkzeug.exceptions import HTTPException, TooManyRequests
from werkzeug.routing import RequestRedirect
from wtforms import StringField
from wtforms.validators import DataRequired, Length, ValidationError

from tsd_server import audit, audit_throttle, client_address, fetch_metadata
from tsd_server.api.errors import retry_after_seconds
from tsd_server.discovery.pairing import (
    approvals,
    codes,
    device_flow,
    failure_breaker,
    limits,
    link_pages,
    qr,
    web_codes,
)
from tsd_server.rate_limit_keys import account_key, address_key
from tsd_server.web.forms import ConfirmForm

pairing_web_bp = Blueprint("pairing_web", __name__)
qr_web_bp = Blueprint("qr_web", __name__)

# The session notes the QR link last opened while logged out, by the person or this site
# (``_asked_first_when_opened_elsewhere``); the login form reads it (``after_login``).
OPENED_LOGGED_OUT_KEY = "tsd_qr_opened_logged_out"
# ``/link/qr/<token>?asked=login``: the login form's way to the question page.
ASK_PARAM, ASK_AFTER_LOGIN = "asked", "login"
# ``/link/qr/<token>?answer=<value>``: the question page's own link. A browser that sends
# no Sec-Fetch-Site (any browser, to a plain-http server) does not vouch for that click
# either, so the link carries a one-time value that only this session was shown; the
# session keeps it with the link's hash (``_answer_url``, ``_answered_on_question_page``).
ANSWER_PARAM, ANSWER_KEY = "answer", "tsd_qr_answer"

CODE_NOT_FOUND = ("No printer is waiting with this code: it may be mistyped, already used or "
                  "expired. Check the printer's screen and try again.")
MALFORMED_CODE = ("A code has 8 letters, like WDJB-MJHT (the dash is optional). Check it "
                  "on the printer's screen; this did not count as a try.")
# Says nothing about who: the person refused may be the owner, the holder a stranger.
HELD_ELSEWHERE = ("Another account is already approving this printer's request. If that was "
                  "not you, someone else may have seen the printer's screen: restart linking "
                  "on the printer to get a new code.")


QR_LINK_SPENT = ("This QR link is not valid: it was opened already, in another browser or "
                 "before this page was answered, or it has expired. Each QR link opens once. "
                 "Start linking again on the printer to get a fresh QR code, or type the code "
                 "the printer shows at /link.")


def _well_formed_code(_form: FlaskForm, field: StringField) -> None:
    """Refused here, before any lookup; such a submission costs no try (limits)."""
    if field.data and codes.normalise(field.data) is None:
        raise ValidationError(MALFORMED_CODE)


class CodeEntryForm(FlaskForm):
    code = StringField("Code shown on the printer", validators=[
        DataRequired(message="Type the code the printer shows."), Length(max=32),
        _well_formed_code],
        render_kw={"autocomplete": "off", "autocapitalize": "characters",
                   "spellcheck": "false"})


@pairing_web_bp.get("/printers/add/code")
@login_required
def add_code():
    return render_template("pairing/add_code.html", form=ConfirmForm(), issued=None)


@pairing_web_bp.post("/printers/add/code")
@login_required
@limits.code_create_per_address
@limits.code_create_per_account
def create_code():
    form = ConfirmForm()
    if not form.validate_on_submit():
        return render_template("pairing/add_code.html", form=form, issued=None), 400
    issued = web_codes.issue(current_user, client_address.for_request())
    return render_template("pairing/add_code.html", form=form, issued=issued,
                           qr_image=qr.data_uri(issued.display))


@pairing_web_bp.route("/link", methods=["GET", "POST"])
@login_required
@limits.link_guess_per_address
@limits.code_guess_per_account
def link():
    """The verification URI (RFC 8628): type the code the printer shows. A valid code binds
    the printer's request to this account (``approvals.open_by_user_code``)."""
    form = CodeEntryForm()
    if form.validate_on_submit():
        try:
            row = approvals.open_by_user_code(form.code.data, user=current_user,
                                              address=client_address.for_request())
        except approvals.HeldByAnotherAccount:
            form.code.errors.append(HELD_ELSEWHERE)
            return render_template("pairing/link.html", form=form), 409
        if row is None:
            failure_breaker.record_invalid_code(where="link", actor=f"user:{current_user.id}",
                                                user_id=current_user.id)
            form.code.errors.append(CODE_NOT_FOUND)
            return render_template("pairing/link.html", form=form), 400
        link_pages.bind(row, via=device_flow.PAIRING_CODE)
        return redirect(url_for("link_web.confirm"))
    return render_template("pairing/link.html", form=form), 400 if form.errors else 200


@pairing_web_bp.errorhandler(TooManyRequests)
def too_many_attempts(error: TooManyRequests):
    """A form page, not JSON: the /link form again, saying when to come back."""
    retry_after = retry_after_seconds()
    wait_minutes = max(1, -(-retry_after // 60))
    headers = {"Retry-After": str(retry_after)}
    if request.endpoint == "pairing_web.link":
        form = CodeEntryForm(formdata=None)
        return render_template("pairing/link.html", form=form, rate_limited=True,
                               wait_minutes=wait_minutes), 429, headers
    page = render_template("error.html", status=429, title="Too many requests", message=(
        f"Too many requests from here. Try again in about {wait_minutes} minutes."))
    return page, 429, headers


@qr_web_bp.get("/printers/add/qr")
@login_required
def add_qr():
    return render_template("pairing/add_qr.html")


def _asked_first_when_opened_elsewhere(view: Callable[[str], Any]) -> Callable[[str], Any]:
    """Outermost, before the login redirect: that redirect would come back same-origin.

    A link opened while logged out by the person or this site (and so not asked about) is
    noted in the session, so that the login form can send the person back to that link,
    and only that one, without asking (``after_login``).

    A request without ``Sec-Fetch-Site`` cannot say who started it (``fetch_metadata``):
    it is asked about like another site's, unless it is the question page's own link
    (``ANSWER_PARAM``). Logged out, it goes to the login form first, noting nothing, so
    that the form leads to the question (``after_login``): asked once, after logging in,
    rather than before and again after (the redirect back does not say either)."""
    @wraps(view)
    def checked(token: str):
        source = fetch_metadata.started_elsewhere(request.headers)
        if source == fetch_metadata.NOT_SENT:
            if _answered_on_question_page(token):
                source = None
            elif not current_user.is_authenticated:
                return current_app.login_manager.unauthorized()
        if source is not None:
            return _opened_by_another_site(token, f"Sec-Fetch-Site: {source}",
                                           elsewhere=source != fetch_metadata.NOT_SENT)
        if request.args.get(ASK_PARAM) == ASK_AFTER_LOGIN:
            return _opened_by_another_site(token, "opened through the login form",
                                           elsewhere=True)
        if not current_user.is_authenticated:
            session[OPENED_LOGGED_OUT_KEY] = codes.secret_hash(token)
        return view(token)
    return checked


def _answer_url(token: str) -> str:
    """The question page's link on to ``token``'s QR link, with a fresh one-time value
    that this session keeps (the last question asked is the one that can be answered)."""
    value = secrets.token_urlsafe(16)
    session[ANSWER_KEY] = [codes.secret_hash(token), value]
    return url_for("qr_web.open_qr_link", token=token, **{ANSWER_PARAM: value})


def _answered_on_question_page(token: str) -> bool:
    """Whether this request is the link of the question page this session was last shown,
    for this QR link. Spends the value: another site cannot read the page, so cannot know
    it, and a reload or a second use is asked about again."""
    given = request.args.get(ANSWER_PARAM)
    if not given:
        return False
    noted = session.pop(ANSWER_KEY, None)
    if not (isinstance(noted, list) and len(noted) == 2
            and all(isinstance(part, str) for part in noted)):
        return False
    return codes.secret_matches(noted[0], token) and hmac.compare_digest(
        noted[1].encode(), given.encode())


def after_login(target: str) -> str:
    """Where the login form sends someone whose ``next`` is ``target``, a path on this site
    (``auth.views.safe_next`` has checked that): ``target`` itself, unless it leads to a QR
    link that this browser did not open itself before logging in. Then the question page
    (``?asked=login``) for that link, spending and binding nothing.

    Why: the login form's redirect comes back same-origin, so ``/login?next=/link/qr/…``
    sent by another site would otherwise wash the open and skip the question that another
    site's open gets. Refusing every QR ``next`` would be simpler, but would ask everyone
    who scans a QR code on a phone that is not logged in yet, the usual first scan; the
    browser already told us, on the link's first open, that the person started it. That
    note lives in the session, which the login form reads here, before it starts a fresh
    session: were the note lost, the person is asked, never let through. A browser that
    did not say (no ``Sec-Fetch-Site``: plain http) leaves no note, so it is asked here.
    """
    token = _qr_link_token(target)
    if token is None:
        return target
    noted = session.pop(OPENED_LOGGED_OUT_KEY, None)
    if isinstance(noted, str) and codes.secret_matches(noted, token):
        return target
    return url_for("qr_web.open_qr_link", token=token, **{ASK_PARAM: ASK_AFTER_LOGIN})


def _qr_link_token(target: str) -> str | None:
    """The token of the QR link a browser ends on when sent to ``target``, else None.

    Read as a browser and this server would: dot segments dropped (``%2e`` too), escapes
    decoded (``%2F`` too), and empty segments dropped (Werkzeug redirects ``/link//qr/x``
    to ``/link/qr/x``), and the prefix the app is served under (``request.script_root``,
    ``TSD_PROXY_FIX_X_PREFIX``) taken off, as the proxy does. That erring covers more than
    reaches the link, never less: a path that would miss is asked about at worst."""
    adapter = current_app.url_map.bind("localhost")
    # Read like the path below: the prefix may hold escapes (X-Forwarded-Prefix: /my%20app).
    root = [segment for segment in unquote(request.script_root).split("/")
            if segment not in ("", ".")]
    path = target
    for _ in range(3):
        segments: list[str] = []
        for segment in unquote(urlsplit(path).path).split("/"):
            if segment == "..":
                segments = segments[:-1]
            elif segment not in ("", "."):
                segments.append(segment)
        if root and segments[:len(root)] == root:
            segments = segments[len(root):]
        try:
            endpoint, args = adapter.match("/" + "/".join(segments), method="GET")
        except RequestRedirect as moved:
            path = moved.new_url
            continue
        except HTTPException:
            return None
        return args["token"] if endpoint == "qr_web.open_qr_link" else None
    return None


@qr_web_bp.get("/link/qr/<token>")
@_asked_first_when_opened_elsewhere
@login_required
@limits.busy_limit("QR_LINK_LIMIT")
@limits.busy_limit("QR_LINK_LIMIT", key_func=account_key)
def open_qr_link(token: str):
    """The link inside a printer's QR code: leads to the approval page, once, and binds the
    printer's request to this account (``approvals.open_qr_link``). Opened again in the
    session that opened it, while the request waits: the same page again."""
    row = link_pages.reopened_qr_link(token)
    if row is None:
        try:
            row = approvals.open_qr_link(token, user=current_user,
                                         address=client_address.for_request())
        except approvals.HeldByAnotherAccount:
            return render_template("error.html", status=409, title="This link cannot be used",
                                   message=HELD_ELSEWHERE), 409
        if row is None:
            return render_template("error.html", status=400, title="This link cannot be used",
                                   message=QR_LINK_SPENT), 400
        link_pages.bind(row, via=device_flow.QR_CODE)
    # Shown so the person can check it against the printer's screen (RFC 8628 §3.3.1).
    user_code = codes.display(codes.user_code_for(token)) if row.user_code_hash else None
    return link_pages.render_confirm(row, user_code=user_code)


def _opened_by_another_site(token: str, detail: str, *, elsewhere: bool = False):
    """A QR link that another site or app opened, or reached through the login form without
    this browser opening it first (``after_login``), both ``elsewhere``; or that a browser
    opened without saying who started it: nothing spent or bound, and a page that asks
    whether the person scanned it, with a link back here that the browser then reports as
    same-origin or, where it reports nothing, that carries a one-time value
    (``_answer_url``). Some browsers (Firefox) report a camera app's link as cross-site too.
    Audited at most once a minute per address, with the printer it named, and not at all
    while the rate-limit storage fails: no limit or login has run yet."""
    if audit_throttle.first_this_minute("qr_link_cross_site", address_key(), fail_open=False):
        actor, user_id = audit.request_actor()
        target = approvals.qr_link_target(token)
        audit.record_now("qr_link_cross_site", outcome="held", user_id=user_id, actor=actor,
                         strategy=device_flow.QR_CODE,
                         device_uid=target.device_uid if target is not None else None,
                         detail=detail)
    return render_template("pairing/qr_from_elsewhere.html", continue_url=_answer_url(token),
                           elsewhere=elsewhere)
