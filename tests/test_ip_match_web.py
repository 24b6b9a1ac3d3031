"""The "Printers near you" pages: work without JavaScript, escape what devices send."""

from __future__ import annotations

import re

from tests.support import ip_match_fixtures

app_config = ip_match_fixtures.app_config
world = ip_match_fixtures.world

HOME_A, HOME_B = "8.8.8.8", "1.1.1.1"
OFFER_PATH = re.compile(r"^/printers/nearby/offers/([A-Za-z0-9_-]{32,})$")
CLAIM_REFUSAL = ("Too many attempts to link or confirm a printer from this address; wait "
                 "before trying again (see Retry-After).")
NEARBY_REFUSAL = ("Too many requests for printers near you from this address; wait "
                  "before trying again (see Retry-After).")


def page(person, path="/printers/nearby"):
    reply = person.endpoint.request("GET", path)
    return reply.status, reply.body


def form_post(person, path, **fields):
    return person.endpoint.request("POST", path, data={"csrf_token": person.csrf, **fields})


def test_the_page_lists_printers_with_a_link_form_and_escapes_their_names(world):
    printer = world.printer(HOME_A, '<script>alert("x")</script> Mk4')
    anna = world.person(HOME_A)
    printer.announce()
    status, html = page(anna)
    assert status == 200
    assert "&lt;script&gt;alert(" in html and '<script>alert("x")' not in html
    assert f'action="/printers/nearby/{printer.device_id}/link"' in html
    assert 'name="csrf_token"' in html
    assert re.search(r'<script src="/static/nearby\.js[^"]*" defer></script>', html)
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "no inline scripts (CSP)"


def test_each_control_names_its_printer_in_quotes(world):
    """A printer may call itself anything: its name is quoted in its controls' names, so
    "all printers" or "Cancel" do not read as another control (as on My printers).
    static/nearby.js writes the same labels (tests/browser/test_accessibility.py)."""
    listed, picked = world.printer(HOME_A, "all printers"), world.printer(HOME_A, "Cancel")
    anna = world.person(HOME_A)
    listed.announce()
    picked.announce()
    assert anna.link(picked.device_id).status == 200
    _, html = page(anna)
    assert 'aria-label="Link this printer: “all printers”"' in html
    assert 'aria-label="Enter the code of “Cancel”"' in html


def test_the_page_says_why_when_ip_match_cannot_work_here(world):
    lan = world.person("192.168.1.20")
    status, html = page(lan)
    assert status == 200
    assert "non_public_address" in html and "not a public internet address" in html
    assert "Link this printer" not in html


def test_linking_and_confirming_with_plain_forms(app, world):
    printer, anna = world.printer(HOME_A, "Anna's Mk4"), world.person(HOME_A)
    printer.announce()
    picked = form_post(anna, f"/printers/nearby/{printer.device_id}/link")
    assert picked.status == 302
    offer_id = OFFER_PATH.match(picked.headers["Location"]).group(1)
    status, html = page(anna, f"/printers/nearby/offers/{offer_id}")
    assert status == 200
    assert anna.display_name in html and 'name="code"' in html
    code = printer.announce().json["confirmation"]["code"]
    wrong = form_post(anna, f"/printers/nearby/offers/{offer_id}/confirm",
                      code=f"{(int(code) + 1) % 1_000_000:06d}")
    assert wrong.status == 400 and "2 tries left" in wrong.body
    right = form_post(anna, f"/printers/nearby/offers/{offer_id}/confirm", code=code)
    assert right.status == 302
    status, html = page(anna, f"/printers/nearby/offers/{offer_id}")
    assert status == 200 and "Confirmed" in html
    assert printer.announce().json["status"] == "linked"
    status, _ = page(anna, f"/printers/nearby/offers/{offer_id}")
    assert status == 302  # the offer ended with the link: on to My printers, saying so
    assert world.links() == [(anna.user_id, printer.device_id)]
    _, dashboard = page(anna, "/")
    assert "“Anna&#39;s Mk4” is now linked to your account." in dashboard
    assert "has ended" not in dashboard


def test_an_offer_that_ended_without_a_link_says_so(app, world, clock):
    printer, anna = world.printer(HOME_A, "Anna's Mk4"), world.person(HOME_A)
    printer.announce()
    offer_id = anna.link(printer.device_id).json["offer_id"]
    code = printer.announce().json["confirmation"]["code"]
    assert form_post(anna, f"/printers/nearby/offers/{offer_id}/confirm", code=code).status == 302
    clock.advance(seconds=3600)  # confirmed, but the printer never came back for its token
    assert page(anna, f"/printers/nearby/offers/{offer_id}")[0] == 302
    _, dashboard = page(anna, "/")
    assert "That link offer has ended" in dashboard and "is now linked" not in dashboard


def test_a_refused_link_shows_the_page_with_the_reason_and_status(world):
    printer, ben = world.printer(HOME_A), world.person(HOME_B)
    printer.announce()
    refused = form_post(ben, f"/printers/nearby/{printer.device_id}/link")
    assert refused.status == 404 and "No printer with this id" in refused.body


def test_forms_without_the_csrf_token_change_nothing(app, world):
    printer, anna = world.printer(HOME_A), world.person(HOME_A)
    printer.announce()
    forged = anna.endpoint.request("POST", f"/printers/nearby/{printer.device_id}/link")
    assert forged.status == 400
    assert anna.nearby().json["devices"][0]["offer"] is None


def test_someone_elses_offer_page_is_not_shown(world):
    printer, anna = world.printer(HOME_A), world.person(HOME_A)
    printer.announce()
    offer_id = anna.link(printer.device_id).json["offer_id"]
    carl = world.person(HOME_A)
    status, _ = page(carl, f"/printers/nearby/offers/{offer_id}")
    assert status == 302
    posted = form_post(carl, f"/printers/nearby/offers/{offer_id}/confirm", code="123456")
    assert posted.status == 302


def test_the_page_is_refused_while_ip_match_is_off(app, world):
    from tsd_server.discovery import kill_switch

    anna = world.person(HOME_A)
    with app.test_request_context():
        kill_switch.set_flag("ip_match", enabled=False, reason="test", actor="cli")
    status, _ = page(anna)
    assert status == 503


def test_the_script_builds_the_list_without_html_injection(client):
    reply = client.get("/static/nearby.js")
    assert reply.status_code == 200
    script = reply.get_data(as_text=True)
    assert "textContent" in script and "innerHTML" not in script
    assert "/api/v1/discovery/nearby" not in script  # the URL comes from the page


def test_the_strategy_points_the_add_printer_page_here(app):
    from flask import url_for

    from tsd_server.discovery import registry

    with app.test_request_context():
        assert url_for(registry.get("ip_match").add_printer_endpoint) == "/printers/nearby"


def test_links_and_confirms_share_one_budget_on_the_api_and_the_pages(app, world):
    """TSD_IP_MATCH_CLAIM_RATE_LIMIT is one budget per client address for linking and
    confirming, whichever way: with one per route, an address had four times the setting's
    guesses at a printer's confirmation code."""
    app.config["IP_MATCH_CLAIM_RATE_LIMIT"] = "4 per 10 minutes"
    printer, anna = world.printer(HOME_A), world.person(HOME_A)
    printer.announce()
    offer_id = anna.link(printer.device_id).json["offer_id"]  # 1: API link
    assert anna.confirm(offer_id, "000000").status == 400  # 2: API confirm, wrong
    assert form_post(anna, f"/printers/nearby/offers/{offer_id}/confirm",
                     code="000000").status in (200, 400)  # 3: web confirm, wrong
    assert form_post(anna, f"/printers/nearby/{printer.device_id}/link").status in (
        302, 303, 409)  # 4: web link
    for refused in (anna.confirm(offer_id, "000000"),
                    form_post(anna, f"/printers/nearby/offers/{offer_id}/confirm",
                              code="000000"),
                    anna.link(printer.device_id)):
        assert refused.status == 429, (refused.status, str(refused.body)[:200])
        assert CLAIM_REFUSAL in (refused.json["message"] if isinstance(refused.body, dict)
                                 else refused.body)


def test_looking_for_printers_too_often_is_refused_in_a_sentence(app, world):
    """Flask-Limiter alone says the limit ("2 per 1 minute"); the API and the page say what
    happened and what to do, as the pairing limits do."""
    app.config["IP_MATCH_NEARBY_RATE_LIMIT"] = "2 per minute"
    anna = world.person(HOME_A)
    for _ in range(2):
        assert anna.nearby().status == 200 and page(anna)[0] == 200
    refused_api, (status, html) = anna.nearby(), page(anna)
    assert refused_api.status == 429 and refused_api.json["message"] == NEARBY_REFUSAL
    assert status == 429 and NEARBY_REFUSAL in html
