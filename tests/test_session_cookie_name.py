"""Over https the session cookie is ``__Host-session`` (tsd_server.SessionInterface), and a
plain ``session`` cookie is not read there.

The attack: a sibling subdomain, or a man in the middle of one plain-http visit, plants its
own logged-in ``session`` cookie in the person's browser (``Domain=example.org`` or over
http, ``Path=/link``). The browser sends it before the person's own, the first is the one
read, and the person's approval on /link would link their printer into the planter's
account. A browser accepts a ``__Host-`` cookie only from the host itself, over https,
for every path, so it cannot be planted. Found by a black-box test of the production shape.
"""

from __future__ import annotations

from tests.support.ip_match_world import CSRF_META

HTTPS = "https://localhost"


def log_in_over_https(app, email: str, password: str):
    client = app.test_client()
    page = client.get("/login", base_url=HTTPS).get_data(as_text=True)
    answer = client.post("/login", base_url=HTTPS, headers={"Referer": HTTPS + "/login"},
                         data={
        "email": email, "password": password, "csrf_token": CSRF_META.search(page).group(1)})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client, answer


def devices_seen(client, base_url: str = HTTPS):
    answer = client.get("/api/v1/devices", base_url=base_url)
    return answer.status_code, [d["id"] for d in (answer.get_json() or {}).get("devices", [])]


def test_over_https_the_cookie_is_host_only_secure_and_for_every_path(app, make_user):
    _, email, password = make_user()
    client, answer = log_in_over_https(app, email, password)
    set_cookie = [value for name, value in answer.headers if name == "Set-Cookie"]
    assert len(set_cookie) == 1 and set_cookie[0].startswith("__Host-session="), set_cookie
    attributes = {part.strip().split("=")[0].lower() for part in set_cookie[0].split(";")}
    assert {"secure", "httponly", "path"} <= attributes and "domain" not in attributes
    assert "Path=/;" in set_cookie[0] or set_cookie[0].endswith("Path=/")
    assert client.get_cookie("session", domain="localhost") is None


def test_a_planted_session_cookie_is_not_read_over_https(app, make_user, link_device):
    victim_id, victim_email, password = make_user("victim@example.org")
    planter_id, planter_email, _ = make_user("planter@example.org", is_admin=True)
    link_device(victim_id, device_uid="victims-printer")
    link_device(planter_id, device_uid="planters-printer")
    victim, _ = log_in_over_https(app, victim_email, password)
    planter, _ = log_in_over_https(app, planter_email, password)
    planted = planter.get_cookie("__Host-session").value  # a valid, logged-in session

    # Planted under the plain name, for /link (sent first there) and for every path.
    for path in ("/link", "/"):
        victim.set_cookie("session", planted, path=path)
    assert devices_seen(victim) == (200, ["victims-printer"])
    page = victim.get("/link", base_url=HTTPS).get_data(as_text=True)
    assert "My printers" in page and ">Admin</a>" not in page  # the victim's, not an admin's

    # Alone, the plain name logs nobody in over https.
    stranger = app.test_client()
    stranger.set_cookie("session", planted)
    assert devices_seen(stranger)[0] == 401
    # Over plain http (development, a LAN) the plain name is the session cookie.
    assert devices_seen(stranger, base_url="http://localhost") == (200, ["planters-printer"])
