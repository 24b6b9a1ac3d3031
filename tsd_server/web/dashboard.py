"""The dashboard: my printers, rename, unlink one or all."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from tsd_server import devices, printable_text
from tsd_server.discovery import registry
from tsd_server.web.forms import ConfirmForm, RenameForm, UnlinkAllForm

bp = Blueprint("web", __name__)


@bp.get("/")
@login_required
def dashboard():
    return render_template("dashboard.html", devices=devices.devices_of(current_user),
                           rename_form=RenameForm(), confirm_form=ConfirmForm(),
                           unlink_all_form=UnlinkAllForm(),
                           way_titles={s.name: s.title for s in registry.all_strategies()})


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


@bp.post("/printers/<int:device_pk>/unlink")
@login_required
def unlink(device_pk: int):
    device = devices.owned_device(current_user, device_pk)
    if device is None or not device.is_active:
        abort(404)
    devices.unlink(device, current_user)
    flash(f"{device.name} is unlinked; its token no longer works.")
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
