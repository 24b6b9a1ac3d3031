"""Incident response: which devices were linked while a strategy misbehaved, and revoke them.

The window is half-open: ``since`` inclusive, ``until`` exclusive, so consecutive windows
([a, b) then [b, c)) neither overlap nor leave a gap. Times are ISO 8601; without an offset
they mean UTC.

Which links count. The audit log is authoritative: it holds every link ever made (the link
service writes the row in the same transaction as the device, with the same timestamp),
while a device row only remembers its latest link -- a device linked by ip_match inside
the window and re-linked by pairing_code later would be invisible in the device table.
Device rows whose own ``linked_at`` falls in the window are added as a safety net (a
device with no audit row for its link is still found). A link's time is when it completed
(the token collected, the offer completed), which can be up to the device flow's or the
offer's lifetime after the approval; docs/incident-response.md says how to end a window.

Which devices are revoked. Those still active whose current token was issued before
``until``. A device re-linked at or after ``until`` holds a token from a link outside the
window -- it went through a working strategy afresh -- so it is listed as
``relinked_after`` and left alone. That also makes ``revoke`` safe to run twice: owners who
re-linked after the first run are not revoked again. Widen ``until`` if the strategy was
still broken later.

What is withdrawn. A revoke also withdraws every link set in motion through the strategy in
the window that has not happened yet (``pending_links.withdraw_made_in``): an approval given
in the window would otherwise link its printer when collected, after the revoke and outside
the window. And only a window that ended a minute ago can be revoked (``check_ended``): a
link reads its time a moment before it commits, so one made as the window ended may still
be committing with a time inside it. The revoke first waits for the links being committed
(``kill_switch.wait_for_links_in_progress``), then reads the time; a link still in flight
then would have had to take over a minute from reading its time to its commit.

One account (``revoke_account``): when the incident is an account rather than a strategy
(its password leaked, say), every printer token of that account is revoked and marked for
re-link, whenever and however it was linked, and every session of the account ends.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from tsd_server import audit, devices, pending_links
from tsd_server.auth import accounts
from tsd_server.clock import utcnow
from tsd_server.deadlock_retry import retried_on_deadlock
from tsd_server.discovery import kill_switch
from tsd_server.extensions import db
from tsd_server.models import AuditEvent, Device, User

ALL = "all"

# What happens to a device found in the window.
ACTIVE = "active"  # its token is from a link before `until`: revoke revokes it
RELINKED_AFTER = "relinked_after"  # re-linked at/after `until`: left alone
NEEDS_RELINK = "needs_relink"  # already revoked by an incident revoke
REVOKED = "revoked"  # unlinked or revoked otherwise

CHUNK = 500
# An account revoke's reason: at most as long as a kill switch's, in the CLI and the admin form.
MAX_REASON = 500

COLUMNS = ("account_id", "email", "device_pk", "device_uid", "name", "linked_via",
           "linked_at", "linked_from_ip", "status")


def parse_time(text: str) -> datetime:
    """ISO 8601 (``2026-06-01T12:00``, ``…Z``, ``…+02:00``, ``2026-06-01``); UTC if no offset.

    A trailing `` UTC`` is taken too: the admin pages write times that way.
    """
    value = (text or "").strip()
    if value[-4:].upper() == " UTC":
        value = value[:-4].rstrip() + "Z"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as 2026-06-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{text!r} is out of range once converted to UTC") from None


@dataclass(frozen=True)
class Window:
    """A strategy (or "all") and a half-open time window [since, until)."""

    strategy: str
    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("window times must carry a time zone")
        if self.since >= self.until:
            raise ValueError("--since must be earlier than --until")

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "since": self.since.isoformat(),
                "until": self.until.isoformat(), "since_inclusive": True,
                "until_inclusive": False}


# How long ago a window must have ended to be revoked: far more than a link takes from
# reading its time to its commit (milliseconds; longer only while it waits for a lock).
SETTLED = timedelta(minutes=1)


def check_ended(window: Window) -> None:
    """ValueError unless ``until`` is at least ``SETTLED`` ago: a link completing in the
    window after the revoke would not be revoked, and the operator must hear it before,
    not find it later."""
    if window.until > utcnow() - SETTLED:
        raise ValueError(
            f"until ({window.until.isoformat()}) has not come yet or is less than a minute "
            "ago, and links still completing in the window would be missed: revoke once "
            "a minute has passed (switch the strategy off first, and end the window at the "
            "switch-off)")


@dataclass(frozen=True)
class AffectedDevice:
    """One device linked in the window: its owner and the (latest) link in the window."""

    account_id: int
    email: str
    display_name: str
    device_pk: int
    device_uid: str
    name: str
    linked_via: str
    linked_at: datetime
    linked_from_ip: str | None
    status: str

    @property
    def will_revoke(self) -> bool:
        return self.status == ACTIVE

    def cells(self) -> list[str]:
        return [str(self.account_id), self.email, str(self.device_pk), self.device_uid,
                self.name, self.linked_via, self.linked_at.isoformat(),
                self.linked_from_ip or "", self.status]

    def to_json(self) -> dict:
        return {"account_id": self.account_id, "email": self.email,
                "device_pk": self.device_pk, "device_uid": self.device_uid,
                "name": self.name, "linked_via": self.linked_via,
                "linked_at": self.linked_at.isoformat(),
                "linked_from_ip": self.linked_from_ip, "status": self.status}


@dataclass(frozen=True)
class Notice:
    """Someone to tell: their devices lost access and must be linked again."""

    account_id: int
    email: str
    display_name: str
    device_names: list[str]


@dataclass(frozen=True)
class RevokeResult:
    revoked: list[AffectedDevice]
    notify: list[Notice]
    withdrawn: int  # links set in motion in the window that had not happened yet


def _status(has_token: bool, needs_relink: bool, linked_at: datetime, until: datetime) -> str:
    if not has_token:
        return NEEDS_RELINK if needs_relink else REVOKED
    return ACTIVE if linked_at < until else RELINKED_AFTER


@dataclass(frozen=True)
class _Found:
    """A device found in the window, and its current ``linked_via`` (its revocation's
    audit row names that, as ``devices.revoke_token`` does)."""

    row: AffectedDevice
    current_via: str


def _find(window: Window, *, lock: bool = False) -> list[_Found]:
    """Every device whose latest link in the window this finds, with its owner.

    Columns, not ORM objects: at the scale of a real incident (tens of thousands of
    devices) building and tracking an object per device and per owner was most of the
    time and memory of a revoke (docs/performance.md, "Incident response at scale")."""
    links = (
        select(AuditEvent.device_id, AuditEvent.at, AuditEvent.strategy, AuditEvent.client_ip)
        .where(AuditEvent.event == "link", AuditEvent.device_id.is_not(None),
               AuditEvent.at >= window.since, AuditEvent.at < window.until)
    )
    current = select(Device.id, Device.linked_at, Device.linked_via, Device.linked_from_ip).where(
        Device.linked_at >= window.since, Device.linked_at < window.until)
    if window.strategy != ALL:
        links = links.where(AuditEvent.strategy == window.strategy)
        current = current.where(Device.linked_via == window.strategy)

    latest: dict[int, tuple[datetime, str, str | None]] = {}
    for device_id, at, strategy, ip in [*db.session.execute(links), *db.session.execute(current)]:
        if device_id not in latest or at > latest[device_id][0]:
            latest[device_id] = (at, strategy, ip)
    ids = sorted(latest)
    found = []
    for start in range(0, len(ids), CHUNK):  # bounded IN lists (SQLite caps bound parameters)
        query = (select(Device.id, Device.device_uid, Device.name, Device.linked_via,
                        Device.linked_at, Device.token_hash.is_not(None), Device.needs_relink,
                        User.id, User.email, User.display_name)
                 .join(User, User.id == Device.owner_id)
                 .where(Device.id.in_(ids[start:start + CHUNK])))
        if lock:  # in id order, as revoke_all writes them: two revokes never cross
            query = query.with_for_update(of=Device).order_by(Device.id)
        for (pk, uid, name, via, linked_at, has_token, needs_relink, owner_id, email,
             display_name) in db.session.execute(query):
            at, strategy, ip = latest[pk]
            found.append(_Found(AffectedDevice(
                account_id=owner_id, email=email, display_name=display_name, device_pk=pk,
                device_uid=uid, name=name, linked_via=strategy, linked_at=at,
                linked_from_ip=ip,
                status=_status(bool(has_token), bool(needs_relink), linked_at, window.until)),
                current_via=via))
    found.sort(key=lambda item: (item.row.email, item.row.linked_at, item.row.device_pk))
    return found


def affected(strategy: str, since: datetime, until: datetime) -> list[AffectedDevice]:
    """Every device linked by ``strategy`` (or "all") in [since, until), with its owner."""
    return [item.row for item in _find(Window(strategy, since, until))]


def people_to_notify(rows: list[AffectedDevice]) -> list[Notice]:
    by_account: dict[int, list[AffectedDevice]] = defaultdict(list)
    for row in rows:
        by_account[row.account_id].append(row)
    return [Notice(account_id=items[0].account_id, email=items[0].email,
                   display_name=items[0].display_name,
                   device_names=[item.name for item in items])
            for items in sorted(by_account.values(), key=lambda items: items[0].email)]


@retried_on_deadlock
def revoke(strategy: str, since: datetime, until: datetime, *, actor: str) -> RevokeResult:
    """Withdraw what the window set in motion and revoke every affected active device, in
    one transaction; returns who to notify. ValueError for a window that has not ended.

    Links being committed finish first (``kill_switch.wait_for_links_in_progress``, before
    the time is read), and the window ended a minute before that, so every link with a time
    in it is found. The withdrawal comes before the reads: it waits for a link that has
    claimed one of its rows, and on SQLite its write takes the one writer's lock. The
    devices are locked (PostgreSQL) while this runs, so an owner re-linking at the same
    moment either lands first (and is then ``relinked_after``, not revoked) or after.
    The tokens go one UPDATE and their audit rows one INSERT per chunk of devices: the
    transaction (and the locks, on SQLite every writer's) lasts as little as it can.
    """
    window = Window(strategy, since, until)
    kill_switch.wait_for_links_in_progress()  # commits: nothing is pending after it
    check_ended(window)
    span = f"{window.strategy} links in [{since.isoformat()}, {until.isoformat()})"
    strategies = set(kill_switch.known_names()) if window.strategy == ALL else {window.strategy}
    withdrawn = pending_links.withdraw_made_in(strategies, since, until, actor=actor,
                                               why=f"incident revoke: {span}")
    found = [item for item in _find(window, lock=True) if item.row.will_revoke]
    by_id = sorted(found, key=lambda item: item.row.device_pk)
    now = utcnow()
    for start in range(0, len(by_id), CHUNK):
        chunk = by_id[start:start + CHUNK]
        devices.revoke_tokens([item.row.device_pk for item in chunk], at=now)
        audit.record_many("revocation", actor=actor, detail=f"incident revoke: {span}", rows=[
            {"user_id": item.row.account_id, "device_id": item.row.device_pk,
             "device_uid": item.row.device_uid, "strategy": item.current_via}
            for item in chunk])
    revoked = [item.row for item in found]
    notify = people_to_notify(revoked)
    audit.record("incident_revoke", actor=actor, strategy=window.strategy,
                 detail=f"{span}: revoked {len(revoked)} device(s) of {len(notify)} "
                        f"account(s), withdrew {withdrawn} link(s) waiting to happen")
    db.session.commit()
    return RevokeResult(revoked=revoked, notify=notify, withdrawn=withdrawn)


def checked_reason(reason: str | None) -> str:
    """The reason for revoking an account, stripped; ValueError, before anything is revoked,
    when it is empty or longer than ``MAX_REASON``: the CLI holds to what the admin form
    allows."""
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("the reason must say why")
    if len(reason) > MAX_REASON:
        raise ValueError(f"the reason is longer than {MAX_REASON} characters")
    return reason


@retried_on_deadlock
def revoke_account(user: User, *, actor: str, reason: str) -> list[Device]:
    """Every working token of one account (say, a compromised one), marked for re-link, and
    every session of it ended, in one transaction: a ``revocation`` row per printer and an
    ``incident_revoke`` row. Without the sessions, whoever holds a stolen cookie would stay
    logged in and link a printer again at once (a leaked password needs ``set-password``
    too)."""
    reason = checked_reason(reason)
    revoked = devices.revoke_all(user, actor=actor, detail=f"account revoke: {reason}",
                                 needs_relink=True)  # withdraws the links the sessions prepared
    accounts.raise_session_epoch(user)
    audit.record("incident_revoke", actor=actor, user_id=user.id,
                 detail=f"account {user.id}: revoked {len(revoked)} device(s) and ended "
                        f"every session: {reason}")
    db.session.commit()
    return revoked
