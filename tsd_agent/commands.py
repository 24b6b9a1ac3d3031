"""The four things the agent does: discover, pair, link, whoami.

Each command returns an exit code from ``tsd_agent.messages``. Each keeps to the server's
pace (``tsd_agent.pacing``): polling loops and link's first request (``ask``) wait out
``rate_limited``, ``rate_limit_unavailable``, ``database_unavailable`` and a kill switch
the server cannot read; ``pair`` waits out only the outages refused before anything was
done (a rate limit there counts code guesses, and a redeem cut off by a database outage
may have spent its code), and ``whoami`` reports them. A ``--timeout`` bounds the whole
command.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import segno

from tsd_agent import messages as m
from tsd_agent.client import (
    ANNOUNCE_PATH,
    POLL_PATH,
    REDEEM_PATH,
    Client,
    Interrupted,
    OutOfTime,
    ServerError,
    Unreachable,
)
from tsd_agent.pacing import (
    CALL_FLOOR,
    DATABASE_OUTAGE,
    MAX_POLL_INTERVAL,
    SLOW_DOWN_STEP,
    NoTimeLeft,
    ask,
    interval_from,
    limits_unchecked,
    pause,
    rate_limit_wait,
    retry_later,
    seconds_from,
    time_left,
)
from tsd_agent.state import AgentState, StateError, save

DEFAULT_CODE_LIFETIME = 600.0  # when the server names none (RFC 8628 requires expires_in)
MAX_CODE_LIFETIME = 3600.0
# RFC 6750's token characters; long enough for any token, short enough for the state file.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~+/-]{1,1024}={0,2}")


@dataclass
class Agent:
    """Everything a command needs: the server, this printer's state, where to print."""

    client: Client
    state: AgentState
    state_path: Path
    name: str
    model: str | None
    out: TextIO
    err: TextIO
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    qr: bool = True
    shown: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(f"tsd-agent: {text}", file=self.err, flush=True)

    def fail(self, error: Exception) -> int:
        code, text = m.describe(error)
        self.warn(f"error: {text}")
        return code

    def linked(self, answer: dict[str, Any], strategy: str, how: str) -> int:
        """Save a newly issued token (before anything else can go wrong) and say so."""
        token = answer.get("access_token")
        if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
            # Saving a malformed token would break the Authorization header, and a huge
            # one the state file (and with it this printer's identity).
            self.warn("error: the server said the printer is linked but sent no usable "
                      "access token; nothing was saved.")
            return m.EXIT_FAILURE
        device = answer.get("device")
        via = device.get("linked_via") if isinstance(device, dict) else None
        self.state.access_token = token
        self.state.server = self.client.base_url
        self.state.linked_via = m.clean(via, 32) if isinstance(via, str) else strategy
        try:
            save(self.state_path, self.state)
        except StateError as error:
            # The server has linked the printer and will not send this token again.
            self.warn(f"error: {error}. The server linked this printer, but its token could "
                      "not be saved and is lost: the website lists the printer without it. "
                      "Unlink it there, make the state file writable and link again.")
            return m.EXIT_STATE
        self.say(f"Linked: \"{self.name}\" ({self.state.device_id}) {how}. "
                 f"Token saved to {self.state_path}.")
        return m.EXIT_OK


def check_writable(agent: Agent) -> None:
    """Save the state as it is before a command that can link: a state file that cannot be
    written (a full disk, a read-only mount) then stops the command before the server links
    the printer and hands out a token that could not be kept. Raises StateError."""
    save(agent.state_path, agent.state)


def interrupted(agent: Agent, interrupt: KeyboardInterrupt) -> int:
    """Ctrl-C. A call that can link, cut off once any byte of it was written, may have
    linked the printer, and its lost answer may have carried the token: say so, as for
    any other lost answer (``cut_off``)."""
    lost = MAY_HAVE_LINKED.get(interrupt.path) if isinstance(interrupt, Interrupted) else None
    if lost and interrupt.sent:
        agent.warn("stopped while a request was on its way; its answer is lost." + lost)
    else:
        agent.warn("stopped; nothing more was sent.")
    return m.EXIT_INTERRUPTED


def discover(agent: Agent, timeout: float | None) -> int:
    """Announce until someone from this household links the printer and confirms."""
    agent.say(f"Announcing \"{agent.name}\" ({agent.state.device_id}) to {agent.client.base_url}.")
    agent.say("Open \"Printers near you\" on the website from the same internet connection. "
              "Ctrl-C stops.")
    deadline = agent.monotonic() + timeout if timeout else None
    announce = partial(agent.client.announce, agent.state.device_id,
                       agent.state.device_secret, agent.name, agent.model)
    shown_code = None
    while True:
        try:
            answer = ask(agent, announce, deadline)
        except NoTimeLeft:
            return not_linked_in_time(agent)
        except Unreachable as error:  # OutOfTime included
            return cut_off(agent, error)
        except Exception as error:  # noqa: BLE001 - every failure gets its one-line message
            return agent.fail(error)
        else:
            status = answer.get("status")
            wait = interval_from(answer.get("poll_interval"))
            if status == "linked":
                return agent.linked(answer, "ip_match", "to the account that confirmed")
            if status == "confirm":
                confirmation = answer.get("confirmation")
                if not isinstance(confirmation, dict):
                    confirmation = {}
                code = m.clean(confirmation.get("code", ""), 16)
                if code and code != shown_code:
                    account = m.clean(confirmation.get("account") or "someone", 80)
                    expires = seconds_from(confirmation.get("expires_in"))
                    agent.say(f"{account} wants to link this printer.")
                    agent.say(f"Confirmation code: {code}")
                    agent.say("If that is you, type this code on the website"
                              + (f" within {round(expires)} seconds." if
                                 expires is not None else ".")
                              + " If it is not you, do nothing.")
                    shown_code = code
            elif status == "waiting":
                if shown_code is not None:
                    agent.say("The confirmation ended without a link; waiting again.")
                    shown_code = None
            else:
                agent.warn(f"error: unexpected announce status {m.clean(status, 40)!r}.")
                return m.EXIT_FAILURE
        if not pause(agent, wait, deadline):
            return not_linked_in_time(agent)


def not_linked_in_time(agent: Agent) -> int:
    agent.warn("error: not linked before --timeout; nothing was linked.")
    return m.EXIT_EXPIRED


MAY_BE_LINKED = (" If the link was being approved at that moment, the printer may be linked "
                 "without its token: check the website, unlink it there and run this again.")
# A redeem links by itself: once sent, the code may be spent and the printer linked.
REDEEM_MAY_HAVE_LINKED = (" The code may have linked the printer without its token reaching "
                          "it: check the website, unlink it there if it is listed, and pair "
                          "again with a new code.")
# No byte of the request was written: the server cannot have acted on it.
NEVER_SENT = " The request was never sent, so nothing was linked."
# What a call cut off by Ctrl-C may have done, by the path it was sent to.
MAY_HAVE_LINKED = {ANNOUNCE_PATH: MAY_BE_LINKED, POLL_PATH: MAY_BE_LINKED,
                   REDEEM_PATH: REDEEM_MAY_HAVE_LINKED}


def cut_off(agent: Agent, error: Unreachable, *, may_be_linked: str = MAY_BE_LINKED) -> int:
    """A call that can link (an announce, a token poll, a redeem) got no answer.

    If any byte of it was written (``sent``), the server may have acted on it and the lost
    answer may have carried the one-time token, so say so, whether --timeout ran out
    (OutOfTime) or the server did not answer. If none was, nothing can have been linked,
    however the call failed (a stalled proxy CONNECT under --timeout too): say that plainly,
    so nobody unlinks a printer or throws away a code for nothing.
    """
    if isinstance(error, OutOfTime):
        code = m.EXIT_EXPIRED
        text = ("--timeout ran out before the server answered." if error.sent else
                f"--timeout ran out while connecting to {error.server}.")
    else:
        code, text = m.describe(error)
    agent.warn(f"error: {text}" + (may_be_linked if error.sent else NEVER_SENT))
    return code


def pair(agent: Agent, code: str, timeout: float | None = None) -> int:
    """Redeem a code the website showed, once the server can check its rate limits."""
    deadline = agent.monotonic() + timeout if timeout else None
    redeem = partial(agent.client.redeem, code.strip(), agent.state.device_id, agent.name,
                     agent.model)
    try:
        answer = ask(agent, redeem, deadline, again=limits_unchecked)
    except NoTimeLeft:
        return not_linked_in_time(agent)
    except Unreachable as error:  # OutOfTime included
        return cut_off(agent, error, may_be_linked=REDEEM_MAY_HAVE_LINKED)
    except ServerError as error:
        code = agent.fail(error)
        if error.code == DATABASE_OUTAGE:  # its commit may have been cut off, not refused
            agent.warn(REDEEM_MAY_HAVE_LINKED.strip())
        return code
    except Exception as error:  # noqa: BLE001 - every failure gets its one-line message
        return agent.fail(error)
    return agent.linked(answer, "pairing_code", "by pairing code")


def link(agent: Agent, timeout: float | None) -> int:
    """RFC 8628 device flow: show a code, a URL and a QR code; poll until approved."""
    # --timeout counts from the start, the code's lifetime from when the server issued it.
    timeout_at = agent.monotonic() + timeout if timeout else None
    authorize = partial(agent.client.authorize, agent.state.device_id, agent.name,
                        agent.model)
    try:
        # Asking for a code links nothing: a call cut off or a wait cut short is just late.
        grant = ask(agent, authorize, timeout_at)
    except (OutOfTime, NoTimeLeft):
        return not_approved_in_time(agent)
    except Exception as error:  # noqa: BLE001 - every failure gets its one-line message
        return agent.fail(error)
    device_code = grant.get("device_code")
    uri = m.clean(grant.get("verification_uri") or "", 500)
    if not isinstance(device_code, str) or not uri:
        agent.warn("error: the server's device authorization answer is incomplete.")
        return m.EXIT_FAILURE
    complete = m.clean(grant.get("verification_uri_complete") or "", 500)
    user_code = m.clean(grant.get("user_code") or "", 20)
    interval = interval_from(grant.get("interval"))
    # The code's own lifetime, not a poll interval: the server's default is 15 minutes.
    expires_in = seconds_from(grant.get("expires_in"))
    expires_in = min(DEFAULT_CODE_LIFETIME if expires_in is None else expires_in,
                     MAX_CODE_LIFETIME)
    show_instructions(agent, uri, user_code, complete, expires_in)

    expires_at = agent.monotonic() + expires_in
    wait = interval
    outage_answered_a_poll = False  # a poll's commit may have collected the token meanwhile
    while True:
        # Checked before every sleep, a rate limit's too: never sleep past the code's expiry,
        # and under --timeout never poll with less than CALL_FLOOR left. The message names
        # whichever comes first.
        after_wait = agent.monotonic() + wait
        out_of_time = timeout_at is not None and after_wait + CALL_FLOOR > timeout_at
        if after_wait > expires_at and not (out_of_time and timeout_at < expires_at):
            agent.warn("error: the code expired before anyone approved it; run "
                       "`tsd-agent link` again for a new one.")
            return m.EXIT_EXPIRED
        if out_of_time:
            return not_approved_in_time(agent)
        agent.sleep(wait)
        wait = interval
        try:
            answer = agent.client.token(device_code, within=time_left(agent, timeout_at))
        except Unreachable as error:  # OutOfTime included
            return cut_off(agent, error)
        except ServerError as error:
            # link_conflict: the same printer was being linked to the same account at that
            # moment; the token was not handed out, so the next poll collects it.
            if error.code in ("authorization_pending", "link_conflict"):
                continue
            if error.code == "slow_down":
                # RFC 8628: add 5 seconds; a server that names a longer interval wins.
                interval = wait = max(min(interval + SLOW_DOWN_STEP, MAX_POLL_INTERVAL),
                                      interval_from(error.body.get("interval"), default=0.0))
                continue
            if retry_later(error):
                outage_answered_a_poll |= error.code == DATABASE_OUTAGE
                wait = max(rate_limit_wait(agent, error), interval)
                continue
            code = agent.fail(error)
            if outage_answered_a_poll and error.code == "invalid_grant":
                agent.warn("A poll that met the server's database outage may have "
                           "collected the token without it reaching this printer: check "
                           "the website, unlink the printer there if it is listed, and run "
                           "this again.")
            return code
        except Exception as error:  # noqa: BLE001 - every failure gets its one-line message
            return agent.fail(error)
        return agent.linked(answer, "device_flow", "after approval on the website")


def not_approved_in_time(agent: Agent) -> int:
    agent.warn("error: not approved before --timeout; nothing was linked.")
    return m.EXIT_EXPIRED


def show_instructions(agent: Agent, uri: str, user_code: str, complete: str,
                      expires_in: float) -> None:
    if user_code:
        agent.say(f"To link this printer, open {uri} where you are logged in and enter the code:")
        agent.say("")
        agent.say(f"    {user_code}")
        agent.say("")
    if complete and agent.qr:
        agent.say(("Or scan" if user_code else "To link this printer, scan")
                  + f" this QR code with a phone where you are logged in ({complete}):")
        agent.out.write(qr_text(complete, agent.out))
    elif complete:  # --no-qr: the link the QR code holds, to open
        agent.say(("Or open" if user_code else "To link this printer, open")
                  + f" {complete} where you are logged in.")
    elif not user_code:
        agent.say(f"To link this printer, open {uri} where you are logged in.")
    minutes = max(1, round(expires_in / 60))
    agent.say(f"Waiting for approval (the code expires in about {minutes} minute"
              f"{'s' if minutes != 1 else ''}; Ctrl-C stops).")
    agent.out.flush()


def qr_text(url: str, stream: TextIO) -> str:
    """The QR code in half-block characters, or ANSI colours where those cannot be printed."""
    qr = segno.make(url, error="m")
    buffer = io.StringIO()
    qr.terminal(out=buffer, compact=True)
    text = buffer.getvalue()
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        buffer = io.StringIO()
        qr.terminal(out=buffer)
        text = buffer.getvalue()
    return text


def whoami(agent: Agent) -> int:
    """Ask the server which printer this token belongs to."""
    state = agent.state
    if not state.access_token:
        agent.warn(f"error: this printer is not linked yet (no token in {agent.state_path}); "
                   "run `tsd-agent discover`, `tsd-agent pair CODE` or `tsd-agent link`.")
        return m.EXIT_NOT_LINKED
    # The token goes only to the server that issued it. A file with a token but no server
    # (hand-edited: the agent saves both) does not say where that is, so it goes nowhere.
    if not state.server:
        agent.warn(f"error: the token in {agent.state_path} does not say which server issued "
                   "it, so it is sent nowhere; link this printer again (or use another "
                   "--state file).")
        return m.EXIT_NOT_LINKED
    if state.server != agent.client.base_url:
        agent.warn(f"error: this printer's token was issued by {state.server} and is sent only "
                   f"there; use --server {state.server} (or another --state file).")
        return m.EXIT_NOT_LINKED
    try:
        answer = agent.client.me(state.access_token)
    except Exception as error:  # noqa: BLE001 - every failure gets its one-line message
        return agent.fail(error)
    device, owner = answer.get("device"), answer.get("owner")
    if not isinstance(device, dict):
        agent.warn("error: the server's answer about this printer is incomplete.")
        return m.EXIT_FAILURE
    owner = owner.get("display_name") if isinstance(owner, dict) else None
    model = device.get("model")
    agent.say(f"Linked: \"{m.clean(device.get('name'), 80)}\" ({m.clean(device.get('id'), 64)})"
              + (f", model {m.clean(model, 80)}" if model else "")
              + f", owner {m.clean(owner, 80) if owner else 'unknown'}"
              + f", via {m.clean(device.get('linked_via'), 32)}"
              + f" since {m.clean(device.get('linked_at'), 40)}.")
    return m.EXIT_OK
