"""The "Printers near you" pages: the same services as the JSON API, as HTML forms.

Everything works without JavaScript (forms and a Refresh link); static/nearby.js only
refreshes the list from the JSON API every poll interval.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, flash, redirect, render_template, session, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from tsd_server import devices
from tsd_server.api.errors import ApiError
from tsd_server.api.request_body import device_id_in_path
from tsd_server.clock import utcnow
from tsd_server.config import configured_limit
from tsd_server.discovery.ip_match import listing, offers
from tsd_server.discovery.ip_match.eligibility import OPENED_FROM_ANOTHER_SITE
from tsd_server.discovery.ip_match.settings import NEARBY_LIMIT_MESSAGE, claim_limit
from tsd_server.discovery.kill_switch import StrategyDisabled
from tsd_server.extensions import limiter
from tsd_server.models import Device
from tsd_server.web.forms import ConfirmForm

bp = Blueprint("ip_match_web", __name__, url_prefix="/printers/nearby")
# The session's last confirmed offer: its id, its printer and when (see offer()).
CONFIRMED_OFFER = "tsd_confirmed_offer"


class CodeForm(FlaskForm):
    code = StringField("Code shown on the printer",
                       validators=[DataRequired("Type the 6-digit code the printer shows."),
                                   Length(max=16)],
                       render_kw={"inputmode": "numeric", "autocomplete": "off"})


def _nearby_page(error: str | None = None, status: int = 200):
    result = listing.nearby(current_user)
    return render_template("ip_match/nearby.html", result=result,
                           looked=result["reason"] != OPENED_FROM_ANOTHER_SITE,
                           link_form=ConfirmForm(), error=error), status


@bp.get("")
@login_required
@limiter.limit(configured_limit("IP_MATCH_NEARBY_RATE_LIMIT"), error_message=NEARBY_LIMIT_MESSAGE)
def nearby():
    return _nearby_page()


@bp.post("/<device_id>/link")
@login_required
@claim_limit
def link(device_id: str):
    try:
        offer = offers.link(current_user, device_id_in_path(device_id))
    except StrategyDisabled:
        raise  # the refusal page of the registry, which says so in the person's words
    except ApiError as error:
        return _nearby_page(error.message, error.status)
    return redirect(url_for("ip_match_web.offer", offer_id=offer.public_id))


def _offer_page(offer, form: CodeForm, status: int = 200):
    # Shown only while the code is asked for; the other states refresh every few seconds.
    replaces = (devices.replaced_by_link(current_user, offer.announcement.device_uid)
                if offer.status == offers.AWAITING_CONFIRMATION else None)
    return render_template("ip_match/offer.html", offer=offer, form=form, replaces=replaces,
                           expires_in=offers.expires_in(offer, utcnow())), status


@bp.get("/offers/<offer_id>")
@login_required
def offer(offer_id: str):
    found = offers.owned_offer(current_user, offer_id)
    if found is None or not offers.is_live(found, utcnow()):
        linked = _linked_by_confirmed_offer(offer_id)
        flash(f"“{linked.name}” is now linked to your account." if linked is not None else
              "That link offer has ended. Printers that finished linking are listed here.")
        return redirect(url_for("web.dashboard"))
    return _offer_page(found, CodeForm())


def _linked_by_confirmed_offer(offer_id: str) -> Device | None:
    """The printer this session's confirmed offer went on to link: the offer is gone once
    it has, and its page would otherwise say only that it ended."""
    confirmed = session.get(CONFIRMED_OFFER)
    if not isinstance(confirmed, dict) or confirmed.get("offer") != offer_id:
        return None
    session.pop(CONFIRMED_OFFER)
    device = devices.working_printer(current_user, str(confirmed.get("device_uid")))
    try:
        confirmed_at = datetime.fromisoformat(str(confirmed.get("at")))
    except ValueError:
        return None
    if device is None or device.linked_via != offers.STRATEGY or \
            device.linked_at < confirmed_at:
        return None
    return device


@bp.post("/offers/<offer_id>/confirm")
@login_required
@claim_limit
def confirm(offer_id: str):
    form = CodeForm()
    found = offers.owned_offer(current_user, offer_id)
    if found is None:
        flash("That link offer has ended. Start again from Printers near you.")
        return redirect(url_for("ip_match_web.nearby"))
    if not form.validate_on_submit():
        return _offer_page(found, form, 400)
    device_uid = found.announcement.device_uid
    try:
        offers.confirm(current_user, offer_id, form.code.data or "")
    except StrategyDisabled:
        raise  # as in link()
    except ApiError as error:
        found = offers.owned_offer(current_user, offer_id)
        if found is None:
            flash(error.message)
            return redirect(url_for("ip_match_web.nearby"))
        form.code.errors = [error.message]
        return _offer_page(found, form, error.status)
    # The offer page says "Confirmed" itself (and keeps saying it while it refreshes), and
    # once the printer has linked, that it has.
    session[CONFIRMED_OFFER] = {"offer": offer_id, "device_uid": device_uid,
                                "at": utcnow().isoformat()}
    return redirect(url_for("ip_match_web.offer", offer_id=offer_id))
