"""The dashboard: my printers, rename, unlink one (after a page that asks) or all (with a
ticked box)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required

from tsd_server import devices, printable_text
from tsd_server.discovery import registry
from tsd_server.models import Device
from tsd_server.web import times
from tsd_server.web.forms import ConfirmForm, RenameForm, UnlinkAllForm

bp = Blueprint("web", __name__)
times.register(bp)  # pages everywhere show times through templates/_time.html


@bp.get("/")
@login_required
def dashboard():
    return render_template("dashboard.html", devices=devices.devices_of(current_user),
                           rename_form=RenameForm(), unlink_all_form=UnlinkAllForm(),
                           way_titles=_way_titles())


def _way_titles() -> dict[str, str]:
    """A printer's "linked via" in the words of "Add a printer", not a strategy's name."""
    return {strategy.name: strategy.title for strategy in registry.all_strategies()}


@bp.post("/printers/<int:device_pk>/rename")
@login_required
def rename(device_pk: int):
    device = devices.owned_device(current_user, device_pk) or abort(404)
    form = RenameForm()
    if not form.validate_on_submit():
        flash(printable_text.MESSAGE if printable_text.MESSAGE in form.name.errors
              else "A name needs 1 to 80 characters.")
        return redirect(url_for("web.dashboard"))
    devices.rename(device, form.name.data.strip())
    flash(f"Renamed to {device.name}.")
    return redirect(url_for("web.dashboard"))


@bp.get("/printers/<int:device_pk>/unlink")
@login_required
def confirm_unlink(device_pk: int) -> ResponseReturnValue:
    """The dashboard's Unlink only asks: unlinking cannot be undone (the printer has to be
    linked again), so the page names the printer and its details before a POST does it."""
    device = devices.owned_device(current_user, device_pk) or abort(404)
    if not device.is_active:
        return _not_linked(device)
    return render_template("unlink_confirm.html", device=device, form=ConfirmForm(),
                           way_titles=_way_titles())


@bp.post("/printers/<int:device_pk>/unlink")
@login_required
def unlink(device_pk: int) -> ResponseReturnValue:
    device = devices.owned_device(current_user, device_pk) or abort(404)
    if not devices.unlink(device, current_user):
        return _not_linked(device)
    flash(f"The printer “{device.name}” is unlinked; its token no longer works.")
    return redirect(url_for("web.dashboard"))


def _not_linked(device: Device) -> ResponseReturnValue:
    """Unlinked already (another tab, the same form sent twice) or revoked by an incident."""
    flash(f"The printer “{device.name}” is not linked any more; nothing was changed.")
    return redirect(url_for("web.dashboard"))


@bp.post("/printers/unlink-all")
@login_required
def unlink_all():
    if not UnlinkAllForm().validate_on_submit():
        flash("Tick the box to confirm; nothing was unlinked.")
        return redirect(url_for("web.dashboard"))
    unlinked = devices.unlink_all(current_user)
    flash(f"Unlinked {len(unlinked)} printer{'' if len(unlinked) == 1 else 's'}; "
          "their tokens no longer work.")
    return redirect(url_for("web.dashboard"))
