"""Sign up, log in, log out, change the password."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user

from tsd_server.api.errors import ApiError, is_api_request
from tsd_server.auth import limits
from tsd_server.auth.accounts import (
    LOCKED,
    AccountError,
    AccountLocked,
    EmailTaken,
    SessionEnded,
    WrongPassword,
    change_password,
    create_user,
    end_sessions,
    log_in,
)
from tsd_server.auth.forms import LoginForm, PasswordChangeForm, RegisterForm
from tsd_server.extensions import db

bp = Blueprint("auth", __name__)

LOGIN_FAILED = "Email or password is not right."
SESSION_ENDED = ("Your session ended while that request ran (you logged out everywhere, the "
                 "password changed, or an administrator ended it), so nothing was done. Log "
                 "in again.")


@bp.app_errorhandler(SessionEnded)
def session_ended(_error: SessionEnded):
    """A request whose session ended while it ran: refused like one that came logged out
    (``accounts.require_session_current`` rolled its work back)."""
    logout_user()
    session.clear()
    if is_api_request():
        return ApiError(401, "login_required", SESSION_ENDED).response()
    flash(SESSION_ENDED)
    return redirect(url_for("auth.login"))


def safe_next(target: str | None) -> str:
    """Only same-site paths: '/x' yes; '//evil', 'https://evil', '/\\evil' no.

    And a QR link (``/link/qr/<token>``) only if this browser opened it before logging in,
    from a scan, typed or from this site; otherwise the page asking "Did you just scan your
    printer's QR code?" for it. Another site can send anyone to ``/login?next=/link/qr/…``
    with its own printer's link, and the redirect back from here is same-origin, which the
    QR link otherwise trusts (``pairing.web.after_login`` says why this, not refusing every
    QR link). Called before the login starts a fresh session: it reads the session.
    """
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return url_for("web.dashboard")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target or any(ord(c) < 32 for c in target):
        return url_for("web.dashboard")
    # Imported here: auth does not import the discovery strategies when it is loaded.
    from tsd_server.discovery.pairing.web import after_login

    return after_login(target)


@bp.route("/register", methods=["GET", "POST"])
@limits.sign_up_per_address
@limits.password_hashes_per_network
def register():
    if not current_app.config["REGISTRATION_OPEN"]:
        return render_template("error.html", title="Sign-up is closed", status=403,
                               message="Ask the operator of this server for an account."), 403
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            create_user(form.email.data, form.password.data,
                        display_name=form.display_name.data)
        except EmailTaken:
            # Same answer as a fresh sign-up: the form does not reveal who has an account.
            db.session.rollback()
        except AccountError as error:
            form.password.errors.append(str(error))
            return render_template("auth/register.html", form=form), 400
        flash("Account created. Log in to continue.")
        return redirect(url_for("auth.login"))
    status = 400 if form.errors else 200
    return render_template("auth/register.html", form=form), status


@bp.route("/login", methods=["GET", "POST"])
@limits.login_per_address
@limits.password_hashes_per_network
@limits.login_per_email
def login():
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = log_in(form.email.data, form.password.data)
        except AccountLocked as locked:
            form.password.errors.append(str(locked))
            return render_template("auth/login.html", form=form), 403
        if user is None:
            form.password.errors.append(LOGIN_FAILED)
            return render_template("auth/login.html", form=form), 400
        target = safe_next(request.args.get("next"))
        # A fresh session on every login: nothing planted before it survives.
        session.clear()
        if not login_user(user):  # locked since log_in read the account
            form.password.errors.append(LOCKED)
            return render_template("auth/login.html", form=form), 403
        return redirect(target)
    status = 400 if form.errors else 200
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """Ends every session of the account, not only this browser's (see ``end_sessions``)."""
    end_sessions(current_user)
    logout_user()
    session.clear()
    flash("You are logged out, on every browser where you were logged in.")
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@limits.password_change_per_address
@limits.password_change_hashes_per_network
@limits.password_change_per_account
@login_required
def password():
    form = PasswordChangeForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        try:
            change_password(user, form.current.data, form.password.data)
        except WrongPassword as error:
            form.current.errors.append(str(error))
            return render_template("auth/password.html", form=form), 400
        except AccountError as error:
            form.password.errors.append(str(error))
            return render_template("auth/password.html", form=form), 400
        # The change ended every session, this one too: a fresh one for this browser.
        session.clear()
        login_user(user)
        flash("Password changed. Every other browser where you were logged in is logged "
              "out.")
        return redirect(url_for("web.dashboard"))
    status = 400 if form.errors else 200
    return render_template("auth/password.html", form=form), status
