"""Admin pages: kill switches, the audit log, incident response. Thin: parse, call, render."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from tsd_server import command_record, devices, incident, incident_csv
from tsd_server.admin import audit_log
from tsd_server.admin.access import admin_actor, refuse_non_admins
from tsd_server.admin.forms import (
    AccountLockForm,
    AccountRevokeForm,
    AuditFilterForm,
    FlagForm,
    IncidentQueryForm,
    RevokeForm,
)
from tsd_server.auth import accounts
from tsd_server.discovery import flag_store, kill_switch, registry

bp = Blueprint("admin", __name__, url_prefix="/admin")
# Every route of this blueprint, present and future, is admin-only.
bp.before_request(refuse_non_admins)
# An incident can hold tens of thousands of devices: a page lists this many (and as many
# accounts to notify), and says so; the CSV download and the CLI have them all. 50,000
# rows made a 20 MB page that took longer than a worker may (docs/performance.md).
SHOWN_ROWS = 500


@bp.get("/")
def index():
    return redirect(url_for("admin.kill_switches"))


@bp.get("/kill-switches")
def kill_switches():
    return _kill_switch_page(FlagForm())


def _kill_switch_page(form: FlagForm, status: int = 200):
    flags = flag_store.runtime_flags()
    return render_template(
        "admin/kill_switches.html", form=form, strategies=registry.with_states(fresh=True),
        setting=kill_switch.deployment_setting(), flags=flags,
        all_flag=(flags or {}).get(kill_switch.ALL), ALL=kill_switch.ALL), status


@bp.post("/kill-switches")
def toggle_kill_switch():
    form = FlagForm()
    if not form.validate_on_submit():
        return _kill_switch_page(form, 400)
    enabled = form.action.data == "enable"
    kill_switch.set_flag(form.target.data, enabled=enabled, reason=form.reason.data,
                         actor=admin_actor())
    flash(f"{form.target.data}: switched {'on' if enabled else 'off'} at runtime.")
    _flash_record(("discovery", form.action.data), target=form.target.data,
                  reason=form.reason.data)
    if enabled:
        states = kill_switch.all_states(fresh=True)
        names = list(states) if form.target.data == kill_switch.ALL else [form.target.data]
        for name in names:
            if not states[name].enabled:
                flash(f"Warning: {name} is STILL OFF ({states[name].disabled_by}): "
                      f"{states[name].reason}")
    return redirect(url_for("admin.kill_switches"))


@bp.get("/audit")
def audit():
    form = AuditFilterForm(formdata=request.args)
    page = request.args.get("page", "1")
    # isdigit() alone lets "²" through to int(), and 5000 digits exceed int()'s limit: 500s.
    page_number = int(page) if page.isascii() and page.isdigit() and len(page) <= 9 else 1
    result = None
    if form.validate():
        filters = audit_log.AuditFilters(
            event=form.event.data or None, strategy=form.strategy.data or None,
            outcome=form.outcome.data or None, actor=form.actor.data or None,
            email=form.email.data or None,
            since=incident.parse_time(form.since.data) if form.since.data else None,
            until=incident.parse_time(form.until.data) if form.until.data else None)
        result = audit_log.search(filters, page_number)
    # Only the form's own fields go into the pager's links: url_for would take other keys
    # (endpoint, _method, _external) as its own arguments.
    query = {field.name: field.data for field in form if field.data}
    return render_template("admin/audit_log.html", form=form, result=result, query=query,
                           known_events=audit_log.KNOWN_EVENTS), 200 if result else 400


@bp.get("/incident")
def incident_query():
    form = IncidentQueryForm(formdata=request.args if request.args else None)
    rows = window = None
    status = 200
    if request.args:
        if form.validate():
            window = form.window()
            rows = incident.affected(window.strategy, window.since, window.until)
        else:
            status = 400
    revoke_form = RevokeForm(formdata=None, data={
        "strategy": form.strategy.data, "since": form.since.data, "until": form.until.data})
    return render_template("admin/incident.html", form=form, rows=rows, window=window,
                           shown=(rows or [])[:SHOWN_ROWS], csv_url=_csv_url(window),
                           revoke_form=revoke_form, account_form=AccountRevokeForm(formdata=None),
                           lock_form=AccountLockForm(formdata=None),
                           to_revoke=[row for row in rows or [] if row.will_revoke]), status


@bp.get("/incident/affected.csv")
def incident_csv_download():
    """Every device of the window, however many: what the page lists only the first of."""
    form = IncidentQueryForm(formdata=request.args)
    if not form.validate():
        flash("The incident window was not valid; query it again.")
        return redirect(url_for("admin.incident_query"))
    window = form.window()
    rows = incident.affected(window.strategy, window.since, window.until)
    return Response(incident_csv.to_csv(rows), mimetype="text/csv", headers={
        "Content-Disposition": 'attachment; filename="affected.csv"',
        "Cache-Control": "no-store"})


def _csv_url(window: incident.Window | None) -> str | None:
    if window is None:
        return None
    return url_for("admin.incident_csv_download", strategy=window.strategy,
                   since=window.since.isoformat(), until=window.until.isoformat())


@bp.post("/incident/revoke")
def incident_revoke():
    """First press: a confirmation page. Only its button (``confirm=yes``) revokes."""
    form = RevokeForm()
    if not form.validate_on_submit():
        flash(form.until.errors[0] if form.until.errors
              else "The incident window was not valid; query it again.")
        # Back to the same query (a window that ended less than a minute ago, say).
        query = {name: getattr(form, name).data for name in ("strategy", "since", "until")}
        return redirect(url_for("admin.incident_query",
                                **{k: v for k, v in query.items() if isinstance(v, str) and v}))
    window = form.window()
    if form.confirm.data != "yes":
        rows = [row for row in incident.affected(window.strategy, window.since, window.until)
                if row.will_revoke]
        confirm_form = RevokeForm(formdata=None, data={
            "strategy": form.strategy.data, "since": form.since.data,
            "until": form.until.data, "confirm": "yes"})
        notify = incident.people_to_notify(rows)
        return render_template("admin/incident_confirm.html", window=window, rows=rows,
                               shown=rows[:SHOWN_ROWS], form=confirm_form, notify=notify,
                               shown_notify=notify[:SHOWN_ROWS], csv_url=_csv_url(window))
    result = incident.revoke(window.strategy, window.since, window.until, actor=admin_actor())
    _flash_record(("incident", "revoke"), strategy=window.strategy,
                  since=command_record.utc_text(window.since),
                  until=command_record.utc_text(window.until), yes=True)
    return render_template("admin/incident_done.html", window=window, result=result,
                           status_now=incident.NEEDS_RELINK,
                           shown=result.revoked[:SHOWN_ROWS],
                           shown_notify=result.notify[:SHOWN_ROWS], csv_url=_csv_url(window))


@bp.post("/incident/revoke-account")
def incident_revoke_account():
    """Every printer token of one account. First press: a confirmation page listing them;
    only its button (``confirm=yes``) revokes."""
    form = AccountRevokeForm()
    if not form.validate_on_submit():
        flash(" ".join(error for errors in form.errors.values() for error in errors)
              + " Nothing was revoked.")
        return redirect(url_for("admin.incident_query"))
    user = accounts.find_user(form.email.data)
    if user is None:
        flash("No account has that email. Nothing was revoked.")
        return redirect(url_for("admin.incident_query"))
    if form.confirm.data != "yes":
        active = devices.active_devices_of(user)
        confirm_form = AccountRevokeForm(formdata=None, data={
            "email": user.email, "reason": form.reason.data, "confirm": "yes"})
        return render_template("admin/account_revoke_confirm.html", account=user,
                               devices=active, reason=form.reason.data, form=confirm_form)
    revoked = incident.revoke_account(user, actor=admin_actor(), reason=form.reason.data)
    _flash_record(("incident", "revoke-account"), email=user.email, reason=form.reason.data,
                  yes=True)
    flash(f"Revoked {len(revoked)} device(s) of {user.email}; they must be linked again. "
          "Every session of the account ended; if its password leaked, set a new one "
          f"(flask --app tsd_server set-password EMAIL). Tell {user.email} why.")
    return redirect(url_for("admin.incident_query"))


@bp.post("/incident/lock-account")
def incident_lock_account():
    """Lock or unlock one account (``accounts.lock``), not an administrator's: a stolen admin
    cookie must not shut the other admins out (nor its owner, their own); the command line
    can."""
    form = AccountLockForm()
    action = request.form.get("action")
    if not form.validate_on_submit() or action not in ("lock", "unlock"):
        problems = " ".join(error for errors in form.errors.values() for error in errors)
        flash(f"{problems or 'Press Lock or Unlock.'} Nothing was changed.")
        return redirect(url_for("admin.incident_query"))
    user = accounts.find_user(form.email.data)
    if user is None:
        flash("No account has that email. Nothing was changed.")
        return redirect(url_for("admin.incident_query"))
    if user.is_admin:
        flash(f"{user.email} is an administrator: lock or unlock it on the command line "
              "(flask --app tsd_server lock-account EMAIL --reason ...). Nothing was changed.")
        return redirect(url_for("admin.incident_query"))
    change = accounts.lock if action == "lock" else accounts.unlock
    try:
        change(user, actor=admin_actor(), reason=form.reason.data)
    except accounts.AccountError as error:
        flash(f"{user.email}: {error}. Nothing was changed.")
        return redirect(url_for("admin.incident_query"))
    if action == "lock":
        flash(f"Locked {user.email}: every session of it ended, and nobody can log in to it "
              "until it is unlocked. Its printers keep working (revoke them above if they "
              "must stop too).")
    else:
        flash(f"Unlocked {user.email}: it can log in again. If it was taken over, it needs a "
              "new password (flask --app tsd_server set-password EMAIL).")
    _flash_record((f"{action}-account",), email=user.email, reason=form.reason.data)
    return redirect(url_for("admin.incident_query"))


def _flash_record(names: tuple[str, ...], **params: str | bool) -> None:
    """The command that redoes this after a restore from a backup (which undoes it): logged
    and shown, as the command itself prints it (docs/production.md)."""
    flash(command_record.admin_action_recorded(names, **params), "command_record")
