"""One clear line for every way a call can fail, and the exit code that goes with it.

Server-supplied text (messages, account names, codes) is printed only after ``clean()``
strips control characters, so a hostile or broken server cannot move the cursor, rewrite
the terminal or spread one message over many lines.
"""

from __future__ import annotations

import unicodedata

from tsd_agent.client import MAX_ANSWER_BYTES, MAX_RETRY_AFTER, ServerError, Unreachable

# Exit codes (documented in docs/agent.md and `tsd-agent --help`).
EXIT_OK = 0
EXIT_FAILURE = 1          # an unexpected answer or server failure
EXIT_USAGE = 2            # bad command line (argparse)
EXIT_UNREACHABLE = 3      # no answer: connection refused, timeout
EXIT_DISABLED = 4         # the strategy is switched off on the server (strategy_disabled)
EXIT_INELIGIBLE = 5       # ip_match refused this address (ip_match_ineligible)
EXIT_RATE_LIMITED = 6     # too many attempts (rate_limited)
EXIT_REFUSED = 7          # code unknown/used/expired, link denied, request rejected
EXIT_EXPIRED = 8          # the code or confirmation ran out of time before approval
EXIT_NOT_LINKED = 9       # no token, or the server no longer accepts it (invalid_token)
EXIT_STATE = 10           # the state file cannot be read or written
EXIT_INTERRUPTED = 130    # Ctrl-C

EXIT_CODES_HELP = """exit codes:
  0  done                        6  rate limited (the wait time is printed)
  1  unexpected server answer    7  refused: invalid code, link denied, bad request
  2  bad command line            8  expired before it was approved
  3  server unreachable          9  not linked, or the token was revoked
  4  strategy switched off       10 state file unusable
  5  address not eligible        130 interrupted"""

STRATEGY_WORDS = {
    "ip_match": "printers-near-you discovery (ip_match)",
    "pairing_code": "pairing codes (pairing_code)",
    "qr_code": "QR codes (qr_code)",
}

DISABLED_BY_WORDS = {
    "deployment": "by the server's deployment settings",
    "runtime": "by an administrator",
    "auto": "automatically, after unusual activity",
    "flag_store_unreadable": "because the server cannot read its kill switch",
}

INELIGIBLE_REASON_WORDS = {
    "untrusted_forwarded_header": "the request carried forwarded-address headers but did not "
    "come through a proxy the server trusts, so your real address is unknown",
    "untrusted_peer": "the server expects requests through its reverse proxy, but yours came "
    "another way, so your real address is unknown",
    "contradictory_forwarded_headers": "the server's reverse proxy passed two different "
    "addresses for you (the operator must fix the proxy)",
    "missing_forwarded_header": "the server's reverse proxy did not pass your address, so every "
    "client would look alike (the operator must fix the proxy)",
    "invalid_forwarded_header": "the server's proxy passed a client address that is not an IP "
    "address",
    "proxy_address": "the server sees its own proxy's address instead of yours",
    "non_public_address": "the server sees a private or loopback address (such as 127.0.0.1 or "
    "192.168.x.x), which cannot stand for a household; a LAN-only server can allow it with "
    "TSD_IP_MATCH_ALLOW_PRIVATE=true",
    "household_limit": "too many unlinked printers are announcing from your internet connection",
    "household_blocked": "discovery from your internet connection is paused after unusual "
    "activity",
    "strategy_disabled": "printers-near-you discovery is switched off",
}

ALTERNATIVES = "link another way: `tsd-agent link` or `tsd-agent pair CODE`"
MAX_SERVER_TEXT = 200


def clean(text: object, limit: int = MAX_SERVER_TEXT) -> str:
    """Printable, single-line text: control and format characters removed, length capped."""
    value = "".join(" " if ch in "\t\r\n" else ch for ch in str(text))
    value = "".join(ch for ch in value if unicodedata.category(ch)[0] != "C")
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 3] + "..."


def describe(error: Exception) -> tuple[int, str]:
    """(exit code, one-line message) for a failed call."""
    if isinstance(error, Unreachable):
        return EXIT_UNREACHABLE, _unreachable(error)
    if isinstance(error, ServerError):
        return _server_error(error)
    return EXIT_FAILURE, clean(error)


def strategy_words(name: object) -> str:
    """Words for a strategy name, or for a list of them (the device flow serves two).

    Only one level of list is read, and three names at most: a server's list nested a
    thousand deep must not overflow the stack, nor a long one fill the screen.
    """
    names = name[:3] if isinstance(name, list) and name else [name]
    return " and ".join(STRATEGY_WORDS.get(str(item), clean(item, 40) or "this way of linking")
                        for item in names)


def ineligible_words(reason: object) -> str:
    return INELIGIBLE_REASON_WORDS.get(str(reason), f"reason '{clean(reason, 40)}'")


def wait_words(seconds: int | None) -> str:
    if seconds is None:
        return "wait a minute before trying again"
    return f"retry in {duration_words(seconds)}"


def duration_words(seconds: float) -> str:
    """'42 seconds' or '10 minutes'."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{round(seconds / 60)} minutes"


def _unreachable(error: Unreachable) -> str:
    if error.kind == "refused":
        return (f"cannot connect to {error.server}: connection refused. Is the server running? "
                "Set the address with --server or TSD_AGENT_SERVER.")
    if error.kind == "timeout":
        # Not sent: the name lookup, the connect, a proxy or the TLS handshake stalled.
        return (f"the server at {error.server} "
                f"{'did not answer' if error.sent else 'could not be reached'} in time; "
                "try again later.")
    return f"cannot reach {error.server}: {clean(error.detail)}"


def _server_error(error: ServerError) -> tuple[int, str]:
    body, code = error.body, error.code
    if code == "strategy_disabled":
        by = DISABLED_BY_WORDS.get(str(body.get("disabled_by")), "")
        return EXIT_DISABLED, (f"linking by {strategy_words(body.get('strategy'))} is switched "
                               f"off on this server{' ' + by if by else ''}; "
                               "try another way or ask the server's operator.")
    if code == "ip_match_ineligible":
        return EXIT_INELIGIBLE, (f"discovery cannot work from here: "
                                 f"{ineligible_words(body.get('reason'))}; {ALTERNATIVES}.")
    if code == "rate_limited" or error.status == 429:
        seconds = error.retry_after
        if seconds is None and isinstance(body.get("retry_after"), int):
            seconds = min(max(body["retry_after"], 0), MAX_RETRY_AFTER)
        return EXIT_RATE_LIMITED, f"too many attempts: the server asks to {wait_words(seconds)}."
    if code == "invalid_code":
        return EXIT_REFUSED, ("that code is not valid: it was mistyped, already used or has "
                              "expired. Ask the website for a new code.")
    if code == "invalid_token":
        return EXIT_NOT_LINKED, ("the server no longer accepts this printer's token (it was "
                                 "unlinked or revoked); link it again.")
    if code == "access_denied":
        return EXIT_REFUSED, ("the link was denied, in the browser or by the server (a way of "
                              "linking switched off, an account logged out everywhere); nothing "
                              "was linked. Run `tsd-agent link` again to start over.")
    if code == "expired_token":
        return EXIT_EXPIRED, ("the code expired before anyone approved it; run "
                              "`tsd-agent link` again for a new one.")
    if code == "device_id_taken":
        return EXIT_REFUSED, ("another device is announcing with this printer's device_id; if "
                              "this state file was copied to a second printer, give one of them "
                              "its own --state file.")
    if code == "link_conflict":
        return EXIT_REFUSED, ("this printer was being linked to the same account by another "
                              "request at that moment; nothing was linked. Run the command "
                              "again.")
    if code == "base_url_unknown":
        return EXIT_FAILURE, ("the server cannot tell its own public address, so it cannot give "
                              "this printer a link; its operator must set TSD_BASE_URL.")
    if code == "unexpected_status":
        return EXIT_FAILURE, (f"the server answered HTTP {error.status}, which is no answer "
                              "(redirects are not followed); check --server: https:// or "
                              "http://, host and any path prefix.")
    if code == "answer_too_large":
        return EXIT_FAILURE, (f"the server's answer (HTTP {error.status}) was larger than "
                              f"{MAX_ANSWER_BYTES // 1024} KiB, far more than any tsd-server "
                              "answer; is --server the address of a tsd-server?")
    if code == "not_json":
        return EXIT_FAILURE, (f"the server answered HTTP {error.status} without JSON; is "
                              "--server the address of a tsd-server?")
    detail = clean(error.message) or "no details"
    if error.status >= 500:
        return EXIT_FAILURE, f"the server failed (HTTP {error.status}, {clean(code, 40)}): {detail}"
    return EXIT_REFUSED, f"the server refused the request ({clean(code, 40)}): {detail}"
