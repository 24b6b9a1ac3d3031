"""``flask --app tsd_server proxy-check``: what the proxy settings mean, and what is wrong.

For self-hosters putting the server behind nginx, Caddy or a load balancer. It prints the
settings that decide a request's address, what each means, the mistakes it can see in
them, the common mistakes it cannot see (they depend on the proxy's own config), and how to
verify from outside with ``GET /api/v1/client-address``. With ``--peer`` (and
``--forwarded-for``) it shows what the server would decide for such a request, using the
same code as real requests (``client_address.resolve``). Exits 1 when it found an error.
"""

from __future__ import annotations

import ipaddress
import json
import textwrap
from dataclasses import dataclass

import click
from flask import current_app
from flask.cli import with_appcontext

from tsd_server import client_address
from tsd_server.client_address import LAN_NETWORKS, SHORTEST_HOME_PREFIX_V6, ProxySettings
from tsd_server.trusted_proxies import is_too_wide

ERROR, WARNING, NOTE = "ERROR", "WARNING", "NOTE"
WIDTH = 92


@dataclass(frozen=True)
class Finding:
    level: str
    text: str


SETTING_MEANINGS = [
    ("PROXY_FIX_X_FOR", "How many proxies in front of the server append to X-Forwarded-For. "
     "The client is the hop that many places from the right. 0 = no proxy: the TCP peer is "
     "the client."),
    ("TRUSTED_PROXIES", "Networks of your proxies, and unix: for a proxy that connects "
     "through gunicorn's unix socket. Forwarded headers are believed only when the direct "
     "peer (and every hop walked through) is inside one of them."),
    ("PROXY_FIX_X_PROTO", "Proxies that set X-Forwarded-Proto (https detection, Secure "
     "cookies). Usually 1 when X_FOR is 1."),
    ("PROXY_FIX_X_HOST", "Proxies that set X-Forwarded-Host (the shipped nginx snippet does: "
     "1). 0 when no proxy sets it; a client's own value is then ignored."),
    ("PROXY_FIX_X_PORT", "Proxies that set X-Forwarded-Port."),
    ("PROXY_FIX_X_PREFIX", "Proxies that set X-Forwarded-Prefix (serving under a sub-path)."),
    ("IPV6_HOUSEHOLD_PREFIX", "IPv6 clients in the same /N network are one household (a home "
     "usually gets a /64 or /56)."),
    ("IP_MATCH_ALLOW_PRIVATE", "LAN mode: private and loopback addresses count as households. "
     "Only for a server that people reach from inside one LAN."),
    ("IP_MATCH_PRIVATE_PREFIX_V4", "In LAN mode, private IPv4 clients in the same /N are one "
     "household."),
    ("IP_MATCH_PRIVATE_PREFIX_V6", "In LAN mode, unique-local IPv6 clients in the same /N are "
     "one household."),
]

COMMON_MISTAKES = [
    "nginx without 'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;' in the "
    "location that passes requests to the server: nginx passes the client's own "
    "X-Forwarded-For on unchanged. Clients that send none are refused with "
    "missing_forwarded_header and all count as the proxy's address; a client that forges "
    "the header IS BELIEVED (ip_match household, rate limits, audit log). The first proxy "
    "must overwrite the header with a value ending in the address it saw. A location with "
    "any proxy_set_header of its own inherits none from the server block: include the "
    "snippet (deploy/tsd-server-proxy.conf) there again. Check from outside with a forged "
    "X-Forwarded-For (under Verify): client_ip must stay your own address.",
    "X_FOR too low (two proxies, e.g. a load balancer and nginx, with X_FOR=1): every client "
    "looks like the outer proxy, i.e. one household for everybody. If the outer proxy is in "
    "TRUSTED_PROXIES the answer is proxy_address; if not, the anomaly breaker trips within "
    "minutes. Set X_FOR to the number of proxies and list all of them.",
    "X_FOR too high (one proxy, X_FOR=2): the server reads a hop that the client wrote "
    "itself. Clients that send no header get missing_forwarded_header; forged hops are "
    "refused as untrusted_forwarded_header because they are not trusted proxies.",
    "The proxy's address is not in TRUSTED_PROXIES (containers: the bridge address such as "
    "172.17.0.1; cloud load balancers: their private range): every request through it is "
    "untrusted_forwarded_header, and the log warns once per such peer.",
    "TRUSTED_PROXIES too wide (0.0.0.0/0, ::/0, or a whole provider range): anybody can "
    "connect directly and choose their address with a forged X-Forwarded-For.",
    "A proxy that passes a client's own X-Forwarded-For unchanged instead of appending to "
    "it: clients choose their address. If it writes the address it saw into X-Real-IP or "
    "Forwarded (which are never believed), a forged header contradicts that and the "
    "request is contradictory_forwarded_headers, with no client address (rate limits and "
    "the audit log count the proxy); otherwise it cannot be told apart. Use "
    "$proxy_add_x_forwarded_for (nginx), Caddy's reverse_proxy or HAProxy's 'option "
    "forwardfor', which append the real peer.",
]

VERIFY = [
    "From a browser or phone at home:   curl -s https://YOUR-SERVER/api/v1/client-address",
    "  client_ip must be your home's public address (compare with your router), peer_ip your "
    "proxy, and ip_match.eligible true.",
    "From another network (a phone on mobile data) the client_ip must change with it.",
    "From outside, forge a header:  curl -s -H 'X-Forwarded-For: 9.9.9.9' https://YOUR-SERVER/api/v1/"
    "client-address  -- client_ip must NOT become 9.9.9.9.",
    "  It must stay your own address, and forwarded_for must end with it. If it is 9.9.9.9,",
    "  or null with ip_match.reason contradictory_forwarded_headers, the proxy passes clients'",
    "  headers on (the first common mistake): switch ip_match off (flask --app tsd_server",
    "  discovery disable ip_match --reason ...) until it is fixed.",
]


def findings(settings: ProxySettings) -> list[Finding]:
    """The mistakes visible in the settings alone, worst first."""
    found: list[Finding] = []
    if settings.x_for > 0 and not settings.any_trusted:
        found.append(Finding(ERROR, f"PROXY_FIX_X_FOR is {settings.x_for} but TRUSTED_PROXIES "
                             "is empty: forwarded headers are never believed, so every "
                             "request through your proxy is untrusted_forwarded_header. List "
                             "your proxies' addresses in TSD_TRUSTED_PROXIES."))
    if settings.any_trusted and settings.x_for == 0:
        found.append(Finding(ERROR, "TRUSTED_PROXIES is set but PROXY_FIX_X_FOR is 0: the "
                             "proxies' X-Forwarded-For is ignored and their requests are "
                             "refused as untrusted_forwarded_header. Set TSD_PROXY_FIX_X_FOR "
                             "to the number of proxies."))
    # Start-up refuses the errors below whose thresholds it shares (a too-wide network, a
    # household prefix shorter than a home's); they stay here for settings built otherwise.
    for network in settings.trusted_proxies:
        if is_too_wide(network):
            found.append(Finding(ERROR, f"TRUSTED_PROXIES contains {network}: far too wide. "
                                 "Anyone inside it can choose their address with a forged "
                                 "X-Forwarded-For. List only your proxies."))
        elif not _is_private(network):
            found.append(Finding(WARNING, f"TRUSTED_PROXIES contains the public network "
                                 f"{network}. Make sure only your own proxies (or your CDN's "
                                 "published ranges) are in it."))
    if settings.trusts_unix_socket:
        found.append(Finding(NOTE, "TRUSTED_PROXIES contains unix:, so whoever can open "
                             "gunicorn's unix socket can choose their address. Only the "
                             "proxy's user may (deploy/tsd-server.socket: SocketUser=root, "
                             "SocketGroup=www-data, SocketMode=0660)."))
    if settings.allow_private:
        found.append(Finding(WARNING, "LAN mode is on: private and loopback addresses are "
                             f"households, grouped by /{settings.private_prefix_v4} (IPv4) "
                             f"and /{settings.private_prefix_v6} (IPv6). Everyone on one LAN "
                             "sees each other's unlinked printers; turn it off for a server "
                             "reachable from the internet."))
        if settings.x_for == 0:
            found.append(Finding(NOTE, "LAN mode without a proxy: a reverse proxy on the same "
                                 "machine would make every client 127.0.0.1 -- one household; "
                                 "if you add one, set X_FOR and TRUSTED_PROXIES."))
    found.extend(_household_prefix_findings(settings.ipv6_household_prefix))
    if settings.x_for > 1:
        found.append(Finding(NOTE, f"{settings.x_for} proxies: each one, not just the nearest, "
                             "must be inside TRUSTED_PROXIES."))
    if settings.x_for > 0 and int(current_app.config["PROXY_FIX_X_PROTO"]) == 0:
        found.append(Finding(NOTE, "PROXY_FIX_X_PROTO is 0: requests that reached your proxy "
                             "over https look like http to the server. Set it to 1 if your "
                             "proxy sends X-Forwarded-Proto."))
    return found


def _household_prefix_findings(prefix: int) -> list[Finding]:
    if prefix < SHORTEST_HOME_PREFIX_V6:
        return [Finding(ERROR, f"IPV6_HOUSEHOLD_PREFIX is {prefix}: a /{prefix} holds "
                        "many customers of one provider (a home gets a /48 at most, usually a "
                        "/56 or /64), and ip_match would make them one household, each "
                        "seeing and linking the others' printers. Set it to 64 (or 56).")]
    if prefix > 64:
        return [Finding(NOTE, f"IPV6_HOUSEHOLD_PREFIX is {prefix}: devices of one home "
                        "normally share a /64 but pick their own addresses in it, so a "
                        "printer and a phone at home will rarely be in one household. 64 is "
                        "the usual choice.")]
    return []


def _is_private(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return any(network.version == lan.version and network.subnet_of(lan)  # type: ignore[arg-type]
               for lan in LAN_NETWORKS) or network.is_private


def _ip_match_state() -> str:
    from tsd_server.discovery import kill_switch

    try:
        state = kill_switch.state("ip_match", fresh=True)
    except Exception as error:  # noqa: BLE001 - a diagnostic must not crash on a bad database
        return f"unknown (database: {error.__class__.__name__})"
    if state.enabled:
        return "on"
    return f"off ({state.disabled_by}: {state.reason})"


def _echo_wrapped(text: str, first: str, rest: str | None = None) -> None:
    click.echo(textwrap.fill(text, width=WIDTH, initial_indent=first,
                             subsequent_indent=first if rest is None else rest))


@click.command("proxy-check")
@click.option("--peer", default=None, metavar="IP",
              help="Show what the server decides for a request from this TCP peer "
              "(unix: for one through gunicorn's unix socket).")
@click.option("--forwarded-for", default=None, metavar="HEADER",
              help="...carrying this X-Forwarded-For header (with --peer).")
@with_appcontext
def proxy_check_command(peer: str | None, forwarded_for: str | None) -> None:
    """Explain the proxy settings and find mistakes that would break ip_match."""
    settings: ProxySettings = current_app.extensions["tsd.proxy_settings"]
    config = current_app.config
    click.echo("Proxy settings (environment variable = value)")
    for key, meaning in SETTING_MEANINGS:
        click.echo(f"  TSD_{key} = {config.get(key)!r}")
        _echo_wrapped(meaning, "      ")
    click.echo(f"  ip_match is {_ip_match_state()}.")
    click.echo("")

    found = findings(settings)
    click.echo("Findings")
    if not found:
        click.echo("  OK: nothing wrong is visible in the settings themselves.")
    for finding in found:
        _echo_wrapped(f"{finding.level}: {finding.text}", "  ", "    ")
    click.echo("")
    click.echo("Common mistakes (visible only from outside; see docs/deploying-behind-a-proxy.md)")
    for mistake in COMMON_MISTAKES:
        _echo_wrapped(f"- {mistake}", "  ", "    ")
    click.echo("")
    click.echo("Verify")
    for line in VERIFY:
        click.echo(f"  {line}")

    if peer is not None:
        environ = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
        record = client_address.resolve(peer, environ, settings)
        click.echo("")
        click.echo(f"A request from peer {peer}"
                   + (f" with X-Forwarded-For: {forwarded_for}" if forwarded_for else "")
                   + " would be seen as:")
        click.echo(json.dumps(record.to_json(), indent=2))
    if any(finding.level == ERROR for finding in found):
        raise SystemExit(1)
