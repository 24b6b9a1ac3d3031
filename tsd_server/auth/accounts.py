"""Account rules: creation and credential checks, shared by the web and the CLI."""

from __future__ import annotations

from flask import g
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached
from werkzeug.security import check_password_hash, generate_password_hash

from tsd_server import audit, devices, pending_links, single_statement
from tsd_server.clock import utcnow
from tsd_server.deadlock_retry import retried_on_deadlock
from tsd_server.extensions import db
from tsd_server.models import User
from tsd_server.printable_text import MESSAGE as CONTROL_CHARACTERS_MESSAGE
from tsd_server.printable_text import has_control_characters, has_lone_surrogates

MIN_PASSWORD_LENGTH = 10
# The login form's limit too: a longer password set from the CLI could never be typed in.
MAX_PASSWORD_LENGTH = 200

# Checked against when the email is unknown, so a miss costs as much time as a hit.
_DUMMY_HASH = generate_password_hash("tsd-timing-equaliser")


class AccountError(ValueError):
    """The account cannot be created; the message is safe to show."""


class EmailTaken(AccountError):
    """The email belongs to an account already (the web does not reveal this)."""


class WrongPassword(AccountError):
    """The current password given to change it is not the account's."""


LOCKED = "This account is locked by the server's operator. Ask them why."


class AccountLocked(AccountError):
    """The password was right, but an operator locked the account (``lock``)."""


class SessionEnded(Exception):
    """The request's session ended while the request ran (``require_session_current``)."""


def normalise_email(email: str) -> str:
    return email.strip().lower()


_USER_BY_ID = select(User.__table__).where(User.__table__.c.id == bindparam("user_id"))


def session_user(session_id: str) -> User | None:
    """The logged-in user of a request (Flask-Login's user loader), or None.

    ``session_id`` is ``User.get_id()``: the user's id and session epoch. A cookie whose
    epoch is not the account's current one was issued before a logout (``end_sessions``),
    so it logs nobody in, even though its signature is good.

    Every logged-in request needs its user. Read through the ORM session, that one SELECT
    also costs a BEGIN and a ROLLBACK round trip, even when the request reads nothing else.
    So the row is read on its own (single_statement), and the object is handed to the
    session as already loaded (SQLAlchemy's ``make_transient_to_detached``). Views use it
    like any user the session loaded, and changes to it are flushed as usual.
    """
    user_id, _, epoch = session_id.partition(":")
    if not all(part.isascii() and part.isdigit() and len(part) <= 18
               for part in (user_id, epoch)):
        return None  # also a cookie of a release before epochs: its holder logs in again
    key = db.session.identity_key(User, int(user_id))
    user = db.session.identity_map.get(key)
    if user is None:
        row = single_statement.first(_USER_BY_ID, {"user_id": int(user_id)})
        if row is None:
            return None
        user = User(**row._mapping)
        make_transient_to_detached(user)
        db.session.add(user)
    if user.session_epoch != int(epoch):  # type: ignore[union-attr]
        return None
    g.session_epoch = int(epoch)  # what require_session_current holds the account to
    g.session_user_id = int(user_id)  # what account_deleted_meanwhile looks for
    return user


def account_deleted_meanwhile() -> bool:
    """The request's logged-in account was deleted (``delete_account``) while the request
    ran, so its writes met a foreign key with no account behind it, or its user object
    could not be reloaded. Such a request ended like one whose session ended; anything
    else that failed stays a failure. Rolls the request's transaction back."""
    user_id = g.get("session_user_id")
    if user_id is None:
        return False
    db.session.rollback()
    return single_statement.first(_USER_BY_ID, {"user_id": user_id}) is None


_NEXT_EPOCH = (update(User.__table__).where(User.__table__.c.id == bindparam("user_id"))
               .values(session_epoch=User.__table__.c.session_epoch + 1))


_EPOCH_HELD = (select(User.__table__.c.session_epoch)
               .where(User.__table__.c.id == bindparam("user_id")).with_for_update(read=True))


def require_session_current(user: User) -> None:
    """Raise ``SessionEnded``, rolled back, unless the request's session is still valid.

    A request checks its session when it starts (``session_user``), but an ending (log out
    everywhere, a new password, an account revoke) may commit while it runs, and its
    withdrawal would miss a code, approval or offer this request commits afterwards. So
    each of these is committed only after this, in its transaction, after its writes: it
    holds the account's row (FOR SHARE on PostgreSQL). An ending that has not raised the
    epoch yet then waits for this commit, and its withdrawal, which comes after the raise,
    finds what was prepared before any device can use it (``pending_links``); one that has
    raised it makes this wait, and refuse. On SQLite the writes here already keep every
    other writer out until the commit."""
    held = db.session.scalar(_EPOCH_HELD, {"user_id": user.id})
    if held is None or held != g.get("session_epoch"):
        db.session.rollback()
        raise SessionEnded("the session ended while the request ran")


def raise_session_epoch(user: User) -> None:
    """Every session cookie of the account issued so far stops working once this commits;
    the caller commits.

    Flask's session lives in the cookie, so forgetting it in one browser leaves any copy
    of it valid; raising the epoch is what makes a logout (or a new password) hold. It
    writes the account's row, which holds the account's lock (``devices.lock_links_of``)
    until the commit: ``pending_links.withdraw`` comes after it."""
    db.session.execute(_NEXT_EPOCH, {"user_id": user.id})


def _log_out_everywhere(user: User, *, actor: str, why: str) -> None:
    """End every session and withdraw the links they prepared (a stolen cookie's codes and
    approvals must not outlive it); the caller commits."""
    raise_session_epoch(user)  # takes the account's lock, as pending_links.withdraw needs
    pending_links.withdraw(user, actor=actor, why=why)


def end_sessions(user: User) -> None:
    """Log the account out everywhere ("Log out" does), withdrawing what its sessions
    prepared and have not used yet. Committed at once."""
    _log_out_everywhere(user, actor=f"user:{user.id}", why="logged out everywhere")
    db.session.commit()


# The owner's own change: the epoch goes up only from the one the request's session holds.
# A lock, an operator's new password and a logout everywhere all raise it.
_NEXT_EPOCH_FROM = (update(User.__table__)
                    .where(User.__table__.c.id == bindparam("user_id"),
                           User.__table__.c.session_epoch == bindparam("epoch"))
                    .values(session_epoch=User.__table__.c.session_epoch + 1))


def change_password(user: User, current: str, new: str) -> None:
    """Replace the password after checking the current one, audited and committed.

    Every session issued so far ends with it (the session epoch goes up), so whoever got in
    with the old password, or holds a copy of a cookie, is out; the caller logs the current
    browser in again. Codes and approvals the account has not seen used yet are withdrawn
    (``pending_links``). A wrong current password is audited (``password_change_failed``)
    and changes nothing. So does a change whose session ended while it ran (an operator's
    lock or new password, a logout everywhere): ``SessionEnded``.
    """
    actor = f"user:{user.id}"
    if not user.check_password(current):
        audit.record("password_change_failed", actor=actor, outcome="refused",
                     user_id=user.id)
        db.session.commit()
        raise WrongPassword("The current password is not right.")
    _check_new_password(new)
    # The check above used the row as the request read it. An operator's lock or new
    # password, or a logout everywhere, committed since then wins: otherwise a thief's
    # change started a moment before would overwrite the operator's password.
    if db.session.execute(_NEXT_EPOCH_FROM, {"user_id": user.id,
                                             "epoch": g.get("session_epoch")}).rowcount != 1:
        db.session.rollback()
        audit.record_now("password_change_failed", actor=actor, outcome="session_ended",
                         user_id=user.id, detail="the session ended while the change ran")
        raise SessionEnded("the account changed while the request ran")
    pending_links.withdraw(user, actor=actor, why="password changed")
    user.set_password(new)  # written at the commit, after the withdrawals
    audit.record("password_changed", actor=actor, user_id=user.id,
                 detail="every session of the account ended")
    db.session.commit()


def set_password(user: User, new: str, *, actor: str) -> None:
    """An operator gives the account a new password, without the current one (it leaked,
    or its owner lost it): otherwise as ``change_password``, so whoever knew the old one,
    or holds a session, is out. Audited and committed."""
    _check_new_password(new)
    _log_out_everywhere(user, actor=actor, why="password set by an operator")
    user.set_password(new)  # written at the commit, after the withdrawals
    audit.record("password_changed", actor=actor, user_id=user.id,
                 detail="set by an operator; every session of the account ended")
    db.session.commit()


def find_user(email: str) -> User | None:
    if has_lone_surrogates(email):  # no such email can be stored, nor sent to the database
        return None
    return db.session.scalar(select(User).where(User.email == normalise_email(email)))


def _check_new_password(password: str) -> None:
    if has_lone_surrogates(password):
        raise AccountError("Passwords must be valid text (UTF-8).")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"Passwords can have at most {MAX_PASSWORD_LENGTH} characters.")


def create_user(email: str, password: str, *, display_name: str | None = None,
                is_admin: bool = False) -> User:
    email = normalise_email(email)
    if ("@" not in email or len(email) > 254 or has_control_characters(email)
            or has_lone_surrogates(email)):
        raise AccountError("Enter an email address.")
    if display_name is not None and has_control_characters(display_name):
        raise AccountError(f"Display name: {CONTROL_CHARACTERS_MESSAGE}")
    if display_name is not None and has_lone_surrogates(display_name):
        raise AccountError("Display name: not valid text (UTF-8).")
    _check_new_password(password)
    user = User(email=email, display_name=(display_name or email.split("@")[0])[:80],
                is_admin=is_admin)
    # Hashed before the check, so a taken email costs the same slow hash as a new one and
    # sign-up timing does not tell who has an account (docs/security.md).
    user.set_password(password)
    if find_user(email) is not None:
        raise EmailTaken("An account with this email already exists.")
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        # The same email signed up at the same moment (a double-clicked form): the unique
        # index decided, and this one lost.
        db.session.rollback()
        raise EmailTaken("An account with this email already exists.") from None
    return user


def _password_matches(user: User | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s; an unknown email (None) takes the same time."""
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return False
    return user.check_password(password)


def log_in(email: str, password: str) -> User | None:
    """The user for these credentials, or None (unknown emails take the same time), audited
    either way and committed: ``login`` for the account, or
    ``login_failed`` (with the account when the email has one, so a guessing campaign
    against it shows in its history; the answer is the same either way).

    A locked account raises ``AccountLocked`` (audited ``login_failed`` / ``locked``), and
    only after its right password: a guess does not learn that the account is locked."""
    user = find_user(email)
    if not _password_matches(user, password):
        audit.record("login_failed", actor="anonymous", outcome="refused",
                     user_id=user.id if user is not None else None)
        db.session.commit()
        return None
    # As it is now, not as before the slow hash: a lock committed meanwhile refuses this
    # log-in (the audit would otherwise show a "login" after the lock), and the session
    # cookie carries the epoch current now.
    db.session.refresh(user)
    if not user.is_active:
        audit.record("login_failed", actor="anonymous", outcome="locked", user_id=user.id)
        db.session.commit()
        raise AccountLocked(LOCKED)
    audit.record("login", actor=f"user:{user.id}", user_id=user.id)
    db.session.commit()
    return user


_SET_LOCK = (update(User.__table__).where(User.__table__.c.id == bindparam("user_id"))
             .values(locked_at=bindparam("locked_at")))


def lock(user: User, *, actor: str, reason: str) -> None:
    """Lock the account (an operator's decision: abuse, a takeover being looked into): every
    session ends, the links they prepared are withdrawn, and nobody logs in until
    ``unlock``. Its printers keep working (``flask incident revoke-account`` cuts them off).
    Audited (``account_locked``) and committed; AccountError if it is locked already."""
    _change_lock(user, lock=True, actor=actor, reason=reason)


def unlock(user: User, *, actor: str, reason: str) -> None:
    """Let the account log in again (its sessions stay ended). Audited (``account_unlocked``)
    and committed; AccountError if it is not locked."""
    _change_lock(user, lock=False, actor=actor, reason=reason)


def _change_lock(user: User, *, lock: bool, actor: str, reason: str) -> None:
    """One conditional UPDATE: of two operators locking (or unlocking) at once, one does it
    and the other is told; the row's state is read as it is now, not as ``user`` was."""
    column = User.__table__.c.locked_at
    changed = db.session.execute(
        _SET_LOCK.where(column.is_(None) if lock else column.is_not(None)),
        {"user_id": user.id, "locked_at": utcnow() if lock else None}).rowcount == 1
    if not changed:
        db.session.rollback()  # expires ``user``: read again below, as it is now
        if lock:
            since = user.locked_at.strftime("%Y-%m-%d %H:%M UTC") if user.locked_at else "?"
            raise AccountError(f"the account is locked already (since {since})")
        raise AccountError("the account is not locked")
    if lock:
        _log_out_everywhere(user, actor=actor, why="account locked")
        audit.record("account_locked", actor=actor, user_id=user.id,
                     detail=f"every session ended: {reason}")
    else:
        audit.record("account_unlocked", actor=actor, user_id=user.id, detail=reason)
    db.session.commit()


def user_count() -> int:
    return db.session.scalar(select(func.count()).select_from(User)) or 0


@retried_on_deadlock
def delete_account(user: User, *, actor: str, reason: str) -> int:
    """Delete the account (its owner asked, say), in one transaction: its printers' tokens
    are revoked and the printers go with it, the links it set in motion are withdrawn
    (``devices.revoke_all``, holding the account's lock, as a link does), and its sessions
    end with its row. Audited (``account_deleted``, with the id, never the email) and
    committed; returns how many printers it had (the dashboard's list).

    The database does the rest (ON DELETE): codes, offers and sightings of the account go,
    and audit rows stay with their user id unset; their actor (``user:<id>``) and this
    row's id still tie them together. An id is never given again (AUTOINCREMENT on SQLite,
    a sequence on PostgreSQL), so a copy of a deleted account's cookie logs nobody in.
    Deleting by hand in ``sqlite3`` would skip all this: its shell enforces no foreign
    keys, and the printers would keep working tokens."""
    user_id, printers = user.id, len(devices.devices_of(user))
    # FOR UPDATE first (PostgreSQL): a request writing a row that refers to the account (a
    # decision's UPDATE takes KEY SHARE on it) then waits for the delete, instead of holding
    # a lock the DELETE needs while it waits for this transaction (a deadlock).
    db.session.execute(select(User.id).where(User.id == user_id).with_for_update())
    devices.revoke_all(user, actor=actor, detail=f"account {user_id} deleted: {reason}")
    audit.record("account_deleted", actor=actor,
                 detail=f"account {user_id} deleted with its {printers} printer(s): {reason}")
    # The revocations and audit rows go first: SQLAlchemy 2.0 does not flush before a Core
    # statement (2.1 does), and at commit they would name printers the DELETE took with it.
    db.session.flush()
    db.session.execute(delete(User.__table__).where(User.__table__.c.id == user_id))
    db.session.expunge(user)
    db.session.commit()
    return printers
