"""Account forms (Flask-WTF: every form carries and checks the CSRF token).

A field left empty says what to type there, not WTForms' "This field is required."
"""

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Regexp

from tsd_server.auth.accounts import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from tsd_server.printable_text import no_control_characters

NEW_PASSWORD = Length(min=MIN_PASSWORD_LENGTH, max=MAX_PASSWORD_LENGTH)

EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,63}$"


def _strip(value: str | None) -> str | None:
    """A pasted address often carries a space; it is not part of the address."""
    return value.strip() if isinstance(value, str) else value


class RegisterForm(FlaskForm):
    email = EmailField("Email", filters=[_strip], validators=[
        DataRequired("Type your email address."), Length(max=254),
        Regexp(EMAIL_PATTERN, message="Enter an email address."), no_control_characters])
    display_name = StringField("Your name (shown to printers you link)", validators=[
        DataRequired("Type the name printers you link will show."), Length(max=80),
        no_control_characters])
    password = PasswordField("Password", validators=[
        DataRequired(f"Choose a password of at least {MIN_PASSWORD_LENGTH} characters."),
        NEW_PASSWORD])
    confirm = PasswordField("Repeat password", validators=[
        DataRequired("Type the same password again."), EqualTo("password", "Passwords differ.")])


class LoginForm(FlaskForm):
    email = EmailField("Email", filters=[_strip], validators=[
        DataRequired("Type the email address of your account."), Length(max=254)])
    password = PasswordField("Password", validators=[
        DataRequired("Type your password."), Length(max=MAX_PASSWORD_LENGTH)])


class PasswordChangeForm(FlaskForm):
    current = PasswordField("Current password", validators=[
        DataRequired("Type the password you log in with now."), Length(max=MAX_PASSWORD_LENGTH)])
    password = PasswordField("New password", validators=[
        DataRequired(f"Choose a new password of at least {MIN_PASSWORD_LENGTH} characters."),
        NEW_PASSWORD])
    confirm = PasswordField("Repeat new password", validators=[
        DataRequired("Type the new password again."), EqualTo("password", "Passwords differ.")])
