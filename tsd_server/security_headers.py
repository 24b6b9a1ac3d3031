"""Response headers every page needs: CSP without inline script, no framing, no caching.

Framing is refused because clickjacking the "Approve" button of a linking page would hand
a stranger a printer. Pages and API answers may show one-time codes or tokens, so nothing
dynamic is cached by the browser or a proxy: ``Cache-Control: no-store``, and ``Pragma:
no-cache`` for HTTP/1.0 caches (RFC 6749 §5.1 asks both of an answer carrying a token).
Referrer-Policy is "same-origin", not "no-referrer": over https Flask-WTF refuses a form
post without a same-site Referer (WTF_CSRF_SSL_STRICT), and a QR link's token never leaves
the site in a Referer.
tests/test_security_headers.py walks the URL map, so every new page is checked.
"""

from flask import Flask, Response, request

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


def register(app: Flask) -> None:
    @app.after_request
    def add_security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        # A missing file under /static/ is the static endpoint too, answered by the error page.
        if request.endpoint != "static" or response.status_code >= 400:
            headers["Cache-Control"] = "no-store"
            headers["Pragma"] = "no-cache"
        return response
