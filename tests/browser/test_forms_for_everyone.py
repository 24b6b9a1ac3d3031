"""A refused form, as a keyboard or screen-reader user meets it: the focus is on the field to
fix, which is marked invalid and read with its error; the title says something went wrong;
an empty field says what to type there; every field has a label that can be seen.

The account forms and the code forms share templates/_form.html; the kill switches' reason
fields are the admin page's own.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in, open_offer
from tests.browser.live import PASSWORD

FOCUSED = """() => {
    const element = document.activeElement;
    return {id: element.id, invalid: element.getAttribute("aria-invalid")};
}"""


def focused(page) -> dict:
    return page.evaluate(FOCUSED)


NAME = "Your name (shown to printers you link)"
# Each form, what to type (label: value), its button, and the field the refusal is about:
# never the form's first field, which has the focus when the page opens.
REFUSED = {
    "log in": ("/login", {"Email": "{email}", "Password": "not the password"}, "Log in",
               "password"),
    "sign up": ("/register", {"Email": "grace@example.org", NAME: "Grace",
                              "Password": "short", "Repeat password": "other"}, "Sign up",
                "password"),
    "password change": ("/account/password", {"Current password": PASSWORD,
                                              "New password": "short",
                                              "Repeat new password": "short"},
                        "Change password", "password"),
}


@pytest.mark.parametrize("form", list(REFUSED))
def test_a_refused_form_puts_the_focus_on_the_field_to_fix(live, page, user, form):
    """The first field had the focus (autofocus) after a refusal too: a screen reader read
    the email field, not the error, and the title gave no hint that anything went wrong."""
    path, typed, button, in_error = REFUSED[form]
    if form == "password change":
        log_in(page, user["email"])
    page.goto(path)
    first = focused(page)
    assert first["id"] != in_error and first["invalid"] is None, first
    title = page.title()
    assert not title.startswith("Error"), title
    for label, value in typed.items():
        page.get_by_label(label, exact=True).fill(value.format(email=user["email"]))
    page.get_by_role("button", name=button).click()

    expect(page.locator("[aria-invalid=true]").first).to_be_visible()
    assert focused(page) == {"id": in_error, "invalid": "true"}
    # The first field in error, when there are more (sign-up: the repeated password too).
    expect(page).to_have_title(f"Error: {title}")


# What an empty form says at each field (the label, what it says to type).
EMPTY = {
    "log in": ("/login", "Log in", {
        "Email": "Type the email address of your account.",
        "Password": "Type your password."}),
    "sign up": ("/register", "Sign up", {
        "Email": "Type your email address.",
        NAME: "Type the name printers you link will show.",
        "Password": "At least 10 characters. Choose a password of at least 10 characters.",
        "Repeat password": "Type the same password again."}),
    "password change": ("/account/password", "Change password", {
        "Current password": "Type the password you log in with now.",
        "New password": "At least 10 characters. "
                        "Choose a new password of at least 10 characters.",
        "Repeat new password": "Type the new password again."}),
}


@pytest.mark.parametrize("form", list(EMPTY))
def test_an_empty_field_says_what_to_type(live, page, user, form):
    """WTForms says "This field is required." of every field: it names nothing to type."""
    path, button, said = EMPTY[form]
    if form == "password change":
        log_in(page, user["email"])
    page.goto(path)
    page.get_by_role("button", name=button).click()
    for label, words in said.items():
        field = page.get_by_label(label, exact=True)
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(field).to_have_accessible_description(words)
    assert focused(page)["id"] == page.get_by_label(list(said)[0], exact=True).get_attribute("id")


def test_an_empty_code_for_a_printer_near_you_says_what_to_type(live, page, user):
    open_offer(live, page, user, "Printer with its code unread")
    page.get_by_role("button", name="Confirm").click()
    field = page.get_by_label("Code shown on the printer")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_accessible_description("Type the 6-digit code the printer shows.")
    expect(field).to_be_focused()
    expect(page).to_have_title(re.compile(r"^Error: Link Printer with its code unread"))


def test_a_refused_kill_switch_reason_is_said_at_its_field(live, open_context, admin):
    """The error was at the top of the page, tied to no field, and nothing had the focus:
    with a toggle per strategy, nothing said which field it was about."""
    page = open_context().new_page()
    log_in(page, admin["email"])
    page.goto("/admin/kill-switches")
    section = page.locator("section[data-strategy=ip_match]")
    field = section.get_by_label("Reason to disable ip_match")
    field.fill("   ")  # spaces only: nothing said
    section.get_by_role("button", name="Switch off").click()

    expect(page).to_have_title("Error: Kill switches · tsd-server")
    alert = page.get_by_role("alert")
    expect(alert).to_have_text("Say why (it goes to the audit log).")
    expect(section.get_by_role("alert")).to_have_count(1)  # at the toggle, not at the top
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_accessible_description("Say why (it goes to the audit log).")
    expect(field).to_be_focused()
    # The other toggles are not what went wrong.
    expect(page.locator("[aria-invalid]")).to_have_count(1)

    # Said and done: the switch goes off, and the page is as before.
    field.fill("Proxy lost the client addresses")
    section.get_by_role("button", name="Switch off").click()
    expect(page.get_by_role("status").first).to_contain_text("ip_match: switched off")
    expect(page.locator("[aria-invalid]")).to_have_count(0)
    expect(page).to_have_title("Kill switches · tsd-server")


def test_kill_switch_reasons_have_labels_that_can_be_seen(live, open_context, admin):
    """The label was for screen readers only: the placeholder, gone at the first letter
    typed, was all that said what the field was for."""
    page = open_context().new_page()
    log_in(page, admin["email"])
    page.goto("/admin/kill-switches")
    fields = page.locator("form input[name=reason]")
    expect(fields.first).to_be_visible()
    for index in range(fields.count()):
        field_id = fields.nth(index).get_attribute("id")
        label = page.locator(f"label[for='{field_id}']")
        box = label.bounding_box()
        assert box and box["width"] > 20 and box["height"] > 5, (field_id, box)
        expect(label).to_contain_text("Reason to ")
        expect(label).to_contain_text("(for the audit log)")


def test_the_approval_page_with_nothing_to_approve_has_its_own_title(live, page, user):
    """Titled "Approve this printer?" with nothing to approve: the tab and a screen reader
    asked a question the page did not."""
    log_in(page, user["email"])
    page.goto("/link/confirm")
    expect(page.get_by_role("heading", level=1)).to_have_text("Nothing to approve")
    expect(page).to_have_title("Nothing to approve · tsd-server")
    expect(page.get_by_role("button")).to_have_count(1)  # Log out: no Approve, no Deny
