"""Admin forms. Forms that change something carry the CSRF token; filter forms (GET) do not."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, StringField
from wtforms.validators import AnyOf, DataRequired, Length, Optional, ValidationError

from tsd_server import incident
from tsd_server.discovery import kill_switch, registry
from tsd_server.printable_text import no_control_characters


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _targets() -> list[str]:
    return [*registry.names(), kill_switch.ALL]


def _time_field(label: str, *, required: bool) -> StringField:
    present = DataRequired("Give a time, such as 2026-06-01T12:00:00Z.") if required \
        else Optional()
    return StringField(label, validators=[present, Length(max=40)], filters=[_strip],
                       render_kw={"placeholder": "2026-06-01T12:00:00Z"})


def _check_time(_form, field) -> None:
    if field.data:
        try:
            incident.parse_time(field.data)
        except ValueError as error:
            raise ValidationError(str(error)) from None


class FlagForm(FlaskForm):
    """Enable or disable one strategy (or all); the reason goes to the audit log."""

    target = HiddenField(validators=[DataRequired()])
    action = HiddenField(validators=[AnyOf(["enable", "disable"])])
    reason = StringField("Reason", filters=[_strip], validators=[
        DataRequired("Say why (it goes to the audit log)."), no_control_characters,
        Length(max=kill_switch.MAX_REASON)])

    def validate_target(self, field) -> None:
        if field.data not in _targets():
            raise ValidationError("Unknown strategy.")


class WindowFields:
    """A strategy (or all) and [since, until): shared by the incident query and revoke."""

    def set_strategy_choices(self) -> None:
        self.strategy.choices = [(name, name) for name in _targets()]

    def validate_until(self, field) -> None:
        _check_time(self, field)
        if self.since.data and field.data and not self.since.errors:
            try:
                incident.Window(self.strategy.data, incident.parse_time(self.since.data),
                                incident.parse_time(field.data))
            except ValueError:
                raise ValidationError("'Until' must be later than 'since'.") from None

    def validate_since(self, field) -> None:
        _check_time(self, field)

    def window(self) -> incident.Window:
        return incident.Window(self.strategy.data, incident.parse_time(self.since.data),
                               incident.parse_time(self.until.data))


class IncidentQueryForm(WindowFields, FlaskForm):
    class Meta:
        csrf = False

    strategy = SelectField("Strategy", choices=[])
    since = _time_field("Since (inclusive, UTC unless an offset is given)", required=True)
    until = _time_field("Until (exclusive)", required=True)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.set_strategy_choices()


class RevokeForm(WindowFields, FlaskForm):
    """The revoke button; ``confirm`` is set only by the confirmation page's button."""

    strategy = HiddenField(validators=[DataRequired()])
    since = HiddenField(validators=[DataRequired(), Length(max=40)])
    until = HiddenField(validators=[DataRequired(), Length(max=40)])
    confirm = HiddenField()

    def validate_strategy(self, field) -> None:
        if field.data not in _targets():
            raise ValidationError("Unknown strategy.")

    def validate_until(self, field) -> None:
        super().validate_until(field)
        if self.since.data and not self.since.errors:
            try:
                incident.check_ended(self.window())
            except ValueError as error:
                raise ValidationError(f"Not revoked: {error}.") from None


class AccountRevokeForm(FlaskForm):
    """Every printer token of one account; ``confirm`` is set only by the confirmation page."""

    email = StringField("Account email", filters=[_strip], validators=[
        DataRequired("Give the email of the account."), Length(max=254)])
    reason = StringField("Reason", filters=[_strip], validators=[
        DataRequired("Say why (it goes to the audit log)."), no_control_characters,
        Length(max=incident.MAX_REASON)])
    confirm = HiddenField()


class AccountLockForm(FlaskForm):
    """Lock an account, or unlock it (the button pressed: ``action``, read by the view)."""

    # Ids of their own: the revoke form on the same page has fields of the same names.
    email = StringField("Email of the account", id="lock-email", filters=[_strip], validators=[
        DataRequired("Give the email of the account."), Length(max=254)])
    reason = StringField("Why", id="lock-reason", filters=[_strip], validators=[
        DataRequired("Say why (it goes to the audit log)."), no_control_characters,
        Length(max=incident.MAX_REASON)])


class AuditFilterForm(FlaskForm):
    class Meta:
        csrf = False

    event = StringField("Event", filters=[_strip], validators=[Optional(), Length(max=32)])
    strategy = StringField("Strategy", filters=[_strip], validators=[Optional(), Length(max=32)])
    outcome = StringField("Outcome", filters=[_strip], validators=[Optional(), Length(max=32)])
    actor = StringField("Actor", filters=[_strip], validators=[Optional(), Length(max=64)],
                        render_kw={"placeholder": "admin:1, user:2, cli, auto"})
    email = StringField("User email", filters=[_strip], validators=[Optional(), Length(max=254)])
    since = _time_field("Since (inclusive)", required=False)
    until = _time_field("Until (exclusive)", required=False)

    def validate_since(self, field) -> None:
        _check_time(self, field)

    def validate_until(self, field) -> None:
        _check_time(self, field)
