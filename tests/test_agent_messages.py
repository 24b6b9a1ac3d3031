"""Every server error becomes one clear line and a documented exit code."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from tests.support import hostile_server
from tests.support.hostile_server import ANNOUNCE, ME, linked_state, reply
from tsd_agent import messages as m
from tsd_agent.cli import main, server_url
from tsd_agent.client import MAX_RETRY_AFTER, ServerError, Unreachable, parse_retry_after


def server_error(status: int, code: str, message: str = "", retry_after=None, **body):
    return ServerError(status, code, message, {"error": code, "message": message, **body},
                       retry_after)


@pytest.mark.parametrize("error, exit_code, words", [
    (server_error(503, "strategy_disabled", strategy="pairing_code", disabled_by="runtime"),
     m.EXIT_DISABLED, ["pairing codes", "switched off", "by an administrator"]),
    (server_error(503, "strategy_disabled", strategy="ip_match", disabled_by="deployment"),
     m.EXIT_DISABLED, ["printers-near-you", "deployment settings"]),
    (server_error(503, "strategy_disabled", strategy=["pairing_code", "qr_code"]),
     m.EXIT_DISABLED, ["pairing codes (pairing_code) and QR codes (qr_code)"]),
    (server_error(403, "ip_match_ineligible", reason="non_public_address"),
     m.EXIT_INELIGIBLE, ["private or loopback", "TSD_IP_MATCH_ALLOW_PRIVATE", "tsd-agent link"]),
    (server_error(403, "ip_match_ineligible", reason="missing_forwarded_header"),
     m.EXIT_INELIGIBLE, ["proxy did not pass your address"]),
    (server_error(403, "ip_match_ineligible", reason="untrusted_forwarded_header"),
     m.EXIT_INELIGIBLE, ["proxy the server trusts"]),
    (server_error(403, "ip_match_ineligible", reason="untrusted_peer"),
     m.EXIT_INELIGIBLE, ["came another way"]),
    (server_error(403, "ip_match_ineligible", reason="contradictory_forwarded_headers"),
     m.EXIT_INELIGIBLE, ["two different addresses"]),
    (server_error(403, "ip_match_ineligible", reason="household_blocked"),
     m.EXIT_INELIGIBLE, ["paused"]),
    (server_error(403, "ip_match_ineligible", reason="household_limit"),
     m.EXIT_INELIGIBLE, ["too many unlinked printers"]),
    (server_error(403, "ip_match_ineligible", reason="proxy_address"),
     m.EXIT_INELIGIBLE, ["proxy's address"]),
    (server_error(429, "rate_limited", retry_after=42), m.EXIT_RATE_LIMITED,
     ["too many attempts", "retry in 42 seconds"]),
    (server_error(429, "rate_limited", retry_after=600), m.EXIT_RATE_LIMITED,
     ["retry in 10 minutes"]),
    (server_error(429, "rate_limited"), m.EXIT_RATE_LIMITED, ["wait a minute"]),
    (server_error(400, "invalid_code"), m.EXIT_REFUSED,
     ["not valid", "already used", "expired"]),
    (server_error(401, "invalid_token"), m.EXIT_NOT_LINKED, ["no longer accepts", "link it again"]),
    (server_error(400, "access_denied"), m.EXIT_REFUSED,
     ["denied", "switched off", "tsd-agent link"]),
    (server_error(400, "expired_token"), m.EXIT_EXPIRED, ["expired", "tsd-agent link"]),
    (server_error(400, "invalid_field", "'code' has an invalid format."), m.EXIT_REFUSED,
     ["refused", "invalid_field", "'code' has an invalid format."]),
    # The token request's code for a malformed device_code (RFC 6749 §5.2): a refusal.
    (server_error(400, "invalid_request", "'device_code' is required."), m.EXIT_REFUSED,
     ["refused", "invalid_request", "'device_code' is required."]),
    (server_error(409, "device_id_taken"), m.EXIT_REFUSED, ["device_id", "own --state"]),
    (server_error(409, "link_conflict"), m.EXIT_REFUSED, ["nothing was linked", "again"]),
    (server_error(503, "base_url_unknown"), m.EXIT_FAILURE, ["TSD_BASE_URL"]),
    (server_error(500, "internal_error", "boom"), m.EXIT_FAILURE, ["HTTP 500", "boom"]),
    (ServerError(502, "not_json", "HTTP 502 without a JSON body"), m.EXIT_FAILURE,
     ["HTTP 502", "address of a tsd-server"]),
    (ServerError(200, "answer_too_large", "HTTP 200 answer larger than 65536 bytes"),
     m.EXIT_FAILURE, ["larger than 64 KiB", "address of a tsd-server"]),
    (ServerError(302, "unexpected_status", "HTTP 302"), m.EXIT_FAILURE,
     ["HTTP 302", "redirects are not followed", "--server"]),
    # Retry-After absent, a 401-digit retry_after in the body: a day, not an OverflowError.
    (ServerError(429, "rate_limited", "", {"error": "rate_limited", "retry_after": 10 ** 400}),
     m.EXIT_RATE_LIMITED, ["retry in 1440 minutes"]),
    (Unreachable("http://127.0.0.1:9", "refused"), m.EXIT_UNREACHABLE,
     ["connection refused", "--server", "TSD_AGENT_SERVER"]),
    (Unreachable("http://127.0.0.1:9", "timeout"), m.EXIT_UNREACHABLE, ["did not answer"]),
    (Unreachable("http://127.0.0.1:9", "timeout", sent=False), m.EXIT_UNREACHABLE,
     ["could not be reached in time"]),
])
def test_each_error_has_its_exit_code_and_words(error, exit_code, words):
    code, text = m.describe(error)
    assert code == exit_code
    for word in words:
        assert word in text
    assert "\n" not in text


def test_unknown_reason_and_strategy_are_named_not_dropped():
    _, text = m.describe(server_error(403, "ip_match_ineligible", reason="new_reason"))
    assert "new_reason" in text
    _, text = m.describe(server_error(503, "strategy_disabled", strategy="future_way"))
    assert "future_way" in text


def test_server_text_cannot_inject_terminal_control_sequences_or_lines():
    hostile = "ok\x1b[2J\x1b]0;owned\x07\nsecond line\r\u202eevil"
    _, text = m.describe(server_error(400, "weird", hostile))
    assert "\x1b" not in text and "\n" not in text and "\r" not in text
    assert "\u202e" not in text and "\x07" not in text
    assert len(m.clean("x" * 1000)) == m.MAX_SERVER_TEXT


def test_retry_after_as_seconds_or_http_date():
    assert parse_retry_after("30") == 30
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 01 Jun 2026 12:01:30 GMT", now) == 90
    assert parse_retry_after("Mon, 01 Jun 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize("value", ["99999999999", "9" * 5000, "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_retry_after_is_at_most_a_day(value):
    # Thousands of digits must not reach int(), nor a huge wait time.sleep().
    assert parse_retry_after(value) == MAX_RETRY_AFTER == 24 * 3600


def test_retry_after_takes_only_ascii_digits():
    assert parse_retry_after("\u00b2") is None  # "²".isdigit(), but int() refuses it


@pytest.mark.parametrize("bad", ["ftp://x", "127.0.0.1:5000", "http://user:pw@host",
                                 "http://host/?q=1", "http://"])
def test_bad_server_urls_are_usage_errors(bad, tmp_path, capsys):
    with pytest.raises(ValueError):
        server_url(bad)
    assert main(["--server", bad, "--state", str(tmp_path / "s.json"), "whoami"]) == m.EXIT_USAGE


def test_server_defaults_to_env_then_loopback(monkeypatch):
    monkeypatch.delenv("TSD_AGENT_SERVER", raising=False)
    assert server_url(None) == "http://127.0.0.1:5000"
    monkeypatch.setenv("TSD_AGENT_SERVER", "https://print.example.org/")
    assert server_url(None) == "https://print.example.org"


def test_connection_refused_is_one_line_and_exit_3(tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(["--server", f"http://127.0.0.1:{port}", "--state", str(tmp_path / "s.json"),
                 "pair", "WDJB-MJHT"])
    err = capsys.readouterr().err
    assert code == m.EXIT_UNREACHABLE
    assert err.count("\n") == 1 and "connection refused" in err


def test_plain_http_to_a_remote_server_warns(tmp_path, capsys):
    # whoami without a token answers locally: nothing is sent anywhere.
    main(["--server", "http://print.example.org", "--state", str(tmp_path / "s.json"), "whoami"])
    assert "unencrypted" in capsys.readouterr().err
    main(["--server", "http://127.0.0.1:5000", "--state", str(tmp_path / "s.json"), "whoami"])
    assert "unencrypted" not in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["--state", str(tmp_path / "s.json")]) == m.EXIT_USAGE
    assert main(["--state", str(tmp_path / "s.json"), "link", "--timeout", "-1"]) == m.EXIT_USAGE


def test_state_problems_exit_10(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text("garbage")
    path.chmod(0o600)
    assert main(["--state", str(path), "whoami"]) == m.EXIT_STATE
    assert "not valid JSON" in capsys.readouterr().err


def test_whoami_without_a_token_exits_9(tmp_path, capsys):
    assert main(["--state", str(tmp_path / "s.json"), "whoami"]) == m.EXIT_NOT_LINKED
    assert "not linked yet" in capsys.readouterr().err


def test_every_address_reason_of_the_server_has_words():
    """A reason added on the server must not reach a printer's owner as a bare code."""
    from tsd_server.client_address import REASON_MESSAGES

    assert set(REASON_MESSAGES) <= set(m.INELIGIBLE_REASON_WORDS)


# --- server text on a console that is not UTF-8 --------------------------------------------

hostile = hostile_server.hostile


def latin1_console() -> io.TextIOWrapper:
    """A console as Python opens it under a Latin-1 locale: strict errors."""
    return io.TextIOWrapper(io.BytesIO(), encoding="iso-8859-1", write_through=True)


def console_text(console: io.TextIOWrapper) -> str:
    return console.buffer.getvalue().decode("iso-8859-1")


def test_discover_shows_the_code_to_an_account_name_the_console_cannot_print(
        hostile, tmp_path):
    """Anyone in the household chooses the display name the printer shows. One character
    the console cannot encode must not stop discover before the code is shown (it did:
    UnicodeEncodeError, exit 1); it is printed as an escape instead."""
    hostile.scripts[ANNOUNCE] = reply(200, {
        "status": "confirm", "poll_interval": 1,
        "confirmation": {"code": "471108", "account": "Анна", "expires_in": 300}})
    out, err = latin1_console(), io.StringIO()
    code = main(["--server", hostile.url, "--state", str(tmp_path / "s.json"), "discover",
                 "--timeout", "0.5"], stdout=out, stderr=err)
    assert code == m.EXIT_EXPIRED, err.getvalue()
    shown = console_text(out)
    assert "\\u0410\\u043d\\u043d\\u0430 wants to link this printer." in shown, shown
    assert "Confirmation code: 471108" in shown


def test_whoami_with_an_owner_name_the_console_cannot_print(hostile, tmp_path):
    state = linked_state(hostile, tmp_path / "s.json")
    hostile.scripts[ME] = reply(200, {"device": {"id": "tsd-12345678", "name": "P",
                                                 "linked_via": "pairing_code",
                                                 "linked_at": "2026-01-01T00:00:00Z"},
                                      "owner": {"display_name": "李雷"}})
    out, err = latin1_console(), latin1_console()
    code = main(["--server", hostile.url, "--state", str(state), "whoami"],
                stdout=out, stderr=err)
    assert code == m.EXIT_OK, console_text(err)
    assert "owner \\u674e\\u96f7" in console_text(out)
