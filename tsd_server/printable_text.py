"""Names that other people see carry no control characters, whichever way they came in.

A printer's name and an account's display name and email end up in other people's
terminals (the agent prints the name of the account that wants to link it; the incident
commands print names and emails to the operator) and in the audit log. Escape sequences in
them could recolour, hide or rewrite what the reader sees. The JSON API refuses such text
in every field (``api/request_body``); the pages' forms and ``create-user`` hold names and
emails to the same rule. What prints them still cleans them, for rows from before the rule.

Command-line text can also be no text at all: Python hands bytes in an argument (or piped
input) that are not UTF-8 over as lone surrogates, which no database driver, password hash
or terminal encodes. ``CLI_TEXT`` makes them a usage error before anything runs.
"""

from __future__ import annotations

import re

import click
from wtforms import Field, Form
from wtforms.validators import ValidationError

# C0 controls (tab, newline and escape among them), DEL and the C1 controls (U+009B is a
# one-character CSI to some terminals); the line and paragraph separators, which some
# readers break lines at; and the explicit bidirectional embeddings, overrides and
# isolates, which make text show in another order than it is stored ("Trojan Source"): a
# name could then read as another on the approval page. The implicit marks (U+200E,
# U+200F) and joiners stay, as right-to-left scripts and emoji need them.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
MESSAGE = ("Control characters (such as tab, newline, escape or a direction override) are "
           "not allowed here.")
# UTF-16 surrogates: only ever half of a character, never text on their own.
LONE_SURROGATES = re.compile("[\ud800-\udfff]")


def has_control_characters(text: str) -> bool:
    return CONTROL_CHARACTERS.search(text) is not None


def has_lone_surrogates(text: str) -> bool:
    """True for text that cannot be encoded: invalid UTF-8 that Python decoded leniently."""
    return LONE_SURROGATES.search(text) is not None


def for_terminal(text: str) -> str:
    """``text`` with every character a terminal could act on (escape sequences, newlines,
    lone surrogates) shown as "?": for rows stored before the rule, and for reasons typed
    into a web form."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def control_characters_marked(text: str) -> str:
    """``text`` with what the input rule refuses (control characters, lone surrogates)
    shown as "?", and nothing else: for a file of names (the incident CSV), where the
    direction marks, joiners and no-break spaces that names may hold must stay as typed."""
    return LONE_SURROGATES.sub("?", CONTROL_CHARACTERS.sub("?", text))


def no_control_characters(_form: Form, field: Field) -> None:
    """WTForms validator for a text field shown to other people."""
    if isinstance(field.data, str) and has_control_characters(field.data):
        raise ValidationError(MESSAGE)


class CommandLineText(click.ParamType):
    """A click parameter that must be text: invalid UTF-8 is a usage error (exit 2), not a
    traceback from the database driver or the password hash."""

    name = "text"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> object:
        if isinstance(value, str) and has_lone_surrogates(value):
            self.fail("is not valid UTF-8 text (check the terminal's or script's encoding).",
                      param, ctx)
        return value


CLI_TEXT = CommandLineText()
