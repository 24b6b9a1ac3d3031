"""Small forms of the dashboard (each one carries the CSRF token)."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, StringField
from wtforms.validators import DataRequired, Length

from tsd_server.printable_text import no_control_characters


class RenameForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=80),
                                          no_control_characters])


class ConfirmForm(FlaskForm):
    """A form with nothing but its CSRF token: for buttons such as Unlink."""


class DecisionForm(FlaskForm):
    """Approve or deny on the approval page. It names the request the page showed: the
    session's binding can change after the page was drawn (another code or QR link opened in
    this browser), and the answer must not go to a request the person never saw."""

    authorization = HiddenField()  # checked against the session's binding by the view


class UnlinkAllForm(FlaskForm):
    """Unlinking every printer takes a ticked box as well as the button."""

    confirm = BooleanField("Yes, unlink all my printers", validators=[DataRequired()])
