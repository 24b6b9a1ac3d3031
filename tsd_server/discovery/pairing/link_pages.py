"""The approval page shared by both ways in (typed code, QR link): approve or deny.

Entering a valid code or opening a QR link binds that device authorization to the user's
account (``approvals``: the first account to reach it holds it; nobody else can reach or
decide it) and to the user's session (the signed session cookie holds its id and how it
was reached: which printer this browser's approval page is about); the decision is a
separate POST with the CSRF token and the id of the request the page showed. If the binding
changed in between (another code or QR link opened in this browser, maybe by a page of
another site navigating to a QR link), nothing is decided: the answer was given to a page
about another printer. The page shows what the device said about itself, where it asked
from, and which account it would join, and warns (RFC 8628 §5.4) that only a printer in
front of the user should be approved: someone who sends a code or link is trying to get
their own device into the user's account. A printer that asked from another network than
the approver's gets a warning of its own (``approvals.network_seen``).
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required

from tsd_server import audit, client_address, devices
from tsd_server.discovery import kill_switch
from tsd_server.discovery.pairing import approvals, codes, device_flow, limits
from tsd_server.extensions import db
from tsd_server.models import DeviceAuthorization
from tsd_server.rate_limit_keys import account_key
from tsd_server.web.forms import DecisionForm
from tsd_server.web.way_off import way_off_page

bp = Blueprint("link_web", __name__)

SESSION_KEY = "tsd_link"
WAYS = (device_flow.PAIRING_CODE, device_flow.QR_CODE)
# The page each way in starts from: what a refusal names when the way is switched off.
CAME_BY = {device_flow.PAIRING_CODE: "pairing_web.link",
           device_flow.QR_CODE: "qr_web.open_qr_link"}


def bind(row: DeviceAuthorization, *, via: str) -> None:
    """Make ``row`` the request this session's approval page is about (after
    ``approvals`` bound it to the account). ``qr_here`` remembers that this session opened
    the request's QR link, also once the person typed its code too (``reopened_qr_link``)."""
    binding = _binding()
    qr_here = via == device_flow.QR_CODE or (
        binding is not None and binding[0] == row.id and binding[2] == _tag(row)
        and _opened_qr_here(binding))
    session[SESSION_KEY] = {"id": row.id, "via": via, "tag": _tag(row), "qr_here": qr_here}


def _opened_qr_here(binding: tuple[int, str, str]) -> bool:
    """Whether this session opened the bound request's QR link (bindings made before
    ``qr_here`` existed say so by their way alone)."""
    return binding[1] == device_flow.QR_CODE or session[SESSION_KEY].get("qr_here") is True


def _tag(row: DeviceAuthorization) -> str:
    """Which request an id meant. A binding left in a session must not pass to a stranger's
    request that got the same id, as SQLite gave a purged newest id out again before
    migration 0008 (and may for ids deleted before it ran)."""
    return row.device_code_hash[:16]


def _binding() -> tuple[int, str, str] | None:
    value = session.get(SESSION_KEY)
    if not isinstance(value, dict):
        return None
    authorization_id, via, tag = value.get("id"), value.get("via"), value.get("tag")
    if not isinstance(authorization_id, int) or via not in WAYS or not isinstance(tag, str):
        return None
    return authorization_id, via, tag


def _shown(authorization_id: int, tag: str) -> str:
    """What the approval form names: the request's id and tag, as the binding holds them."""
    return f"{authorization_id}.{tag}"


def _same_request(binding: tuple[int, str, str]) -> DeviceAuthorization | None:
    """The request the binding names, open or not, if it is still the one that was bound."""
    row = approvals.get(binding[0])
    return row if row is not None and _tag(row) == binding[2] else None


def _bound_row(binding: tuple[int, str, str]) -> DeviceAuthorization | None:
    """The open request the binding names, if it is still the one that was bound and this
    account may decide it."""
    return _decidable(_same_request(binding))


def _decidable(row: DeviceAuthorization | None) -> DeviceAuthorization | None:
    """``row`` if it is open and this account may decide it."""
    return row if row is not None and approvals.is_open(row) and \
        approvals.is_free_or_held_by(row, current_user.id) else None


def reopened_qr_link(token: str) -> DeviceAuthorization | None:
    """The request of a QR link this session opened itself, still open: the approval page
    reloaded (phones reload tabs), not a second use. The link stays spent for every other
    browser and account (``approvals.open_qr_link``)."""
    binding = _binding()
    if binding is None or not _opened_qr_here(binding):
        return None
    row = _bound_row(binding)
    if row is None or not codes.secret_matches(row.qr_token_hash, token):
        return None
    return row


def render_confirm(row: DeviceAuthorization | None, *, user_code: str | None = None,
                   status: int = 200):
    # Approving re-links in place a printer of the user's with the same id: say so, since
    # that printer's current access would stop working (or its place be taken).
    replaces = devices.replaced_by_link(current_user, row.device_uid) if row else None
    printer_limit = devices.printer_limit_reached(current_user.id, row.device_uid) \
        if row else None
    form = DecisionForm(formdata=None, data={"authorization": _shown(row.id, _tag(row))
                                             if row else ""})
    address = client_address.for_request()
    network = approvals.network_seen(row, address) if row else None
    approver_network = client_address.warning_household(address)
    return render_template("pairing/confirm.html", authorization=row, user_code=user_code,
                           replaces=replaces, form=form, network=network,
                           approver_network=approver_network,
                           printer_limit=printer_limit), status


def _switched_off(via: str, current: kill_switch.StrategyState):
    """The refusal names the way the person came by (typed the printer's code, or opened
    its QR link), not the approval page's own endpoint."""
    session.pop(SESSION_KEY, None)
    return way_off_page(via, current, endpoint=CAME_BY[via])


def _way_off(row: DeviceAuthorization | None, via: str):
    """The way-off page when the way the bound request (``row``, None when gone; ``via``
    the way the person came) was reached by is off now, else None. A switch-off denies the
    requests reached through it, so a page reloaded or answered after one says why, not
    merely that the request is gone or decided."""
    way = approvals.way_reached(row, via) if row is not None else via
    current = kill_switch.state(way)
    return None if current.enabled else _switched_off(way, current)


def _page_changed(via: str):
    """The answer came from a page about another request than the one bound now."""
    session.pop(SESSION_KEY, None)
    audit.record("device_flow_decision", actor=f"user:{current_user.id}",
                 outcome="page_changed", user_id=current_user.id, strategy=via,
                 address=client_address.for_request(),
                 detail="another code or QR link was opened after the page was shown")
    db.session.commit()
    return render_template("error.html", status=409, title="Nothing was decided", message=(
        "Another printer's code or QR link was opened in this browser after the page you "
        "answered on was shown, so nothing was approved or denied. If you did not open it "
        "yourself, a website may have tried to swap in its own printer. Start again from "
        "the printer in front of you.")), 409


@bp.get("/link/confirm")
@login_required
def confirm():
    binding = _binding()
    if binding is None:
        return render_confirm(None, status=404)
    row = _same_request(binding)
    if (off := _way_off(row, binding[1])) is not None:
        return off
    row = _decidable(row)
    return render_confirm(row) if row is not None else render_confirm(None, status=404)


@bp.post("/link/confirm")
@login_required
@limits.busy_limit("LINK_DECISION_LIMIT")
@limits.busy_limit("LINK_DECISION_LIMIT", key_func=account_key)
def decide():
    form = DecisionForm()
    decision = request.form.get("decision")
    if not form.validate_on_submit() or decision not in ("approve", "deny"):
        return render_template("error.html", status=400, title="Choose approve or deny",
                               message="Use the buttons on the approval page."), 400
    binding = _binding()
    if binding is None:
        return render_confirm(None, status=404)
    authorization_id, via, tag = binding
    if form.authorization.data != _shown(authorization_id, tag):
        return _page_changed(via)
    address = client_address.for_request()
    row = _bound_row(binding)
    if decision == "approve" and row is not None and \
            devices.printer_limit_reached(current_user.id, row.device_uid) is not None:
        # Nothing decided: the page, which says why, stays bound for after an unlink.
        return render_confirm(row, status=409)
    try:
        if row is not None:
            decided = approvals.decide(authorization_id, user=current_user, via=via,
                                       approve=decision == "approve", address=address)
        else:  # decided, expired, gone, or held by another account: audited as too late
            approvals.too_late(_same_request(binding), user=current_user, via=via,
                               address=address)
            decided = False
    except kill_switch.StrategyDisabled as refused:  # by the way the request was reached
        return _switched_off(refused.extra["strategy"], refused.state)
    # read again: the answer may have found it decided or denied since
    if not decided and (off := _way_off(_same_request(binding), via)) is not None:
        return off
    session.pop(SESSION_KEY, None)
    if not decided:
        return render_template("error.html", status=409, title="Too late", message=(
            "This request was decided already or it expired. Start linking again on the "
            "printer if you still want to link it.")), 409
    if decision == "approve":
        flash("Approved. The printer links itself within a few seconds; reload this page "
              "to see it in the list.")
    else:
        flash("Denied. That device cannot link to your account with this request.")
    return redirect(url_for("web.dashboard"))
