"""Who may see the admin pages: logged-in admins only (403 for others, login for strangers)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from flask import abort
from flask_login import current_user

from tsd_server.extensions import login_manager

F = TypeVar("F", bound=Callable)


def refuse_non_admins():
    """None for an admin; otherwise the login redirect (anonymous) or a 403 (everyone else).

    ``current_user`` is loaded from the database on every request, so taking the admin role
    away takes effect on the next page.
    """
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not current_user.is_admin:
        abort(403, "This page is for administrators.")
    return None


def admin_required(view: F) -> F:
    @wraps(view)
    def wrapped(*args, **kwargs):
        refusal = refuse_non_admins()
        if refusal is not None:
            return refusal
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def admin_actor() -> str:
    """The audit actor for the admin making this request."""
    return f"admin:{current_user.id}"
