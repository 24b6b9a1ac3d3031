"""Small forms of the dashboard (each one carries the CSRF token)."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField
from wtforms.validators import DataRequired, Length


class RenameForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=80)])


class ConfirmForm(FlaskForm):
    """A form with nothing but its CSRF token: for buttons such as Unlink."""


class UnlinkAllForm(FlaskForm):
    """Unlinking every printer takes a ticked box as well as the button."""

    confirm = BooleanField("Yes, unlink all my printers", validators=[DataRequired()])
