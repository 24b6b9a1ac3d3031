"""WSGI entry point: ``gunicorn wsgi:app``."""

from tsd_server import create_app

app = create_app()
