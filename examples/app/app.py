"""The demo's WSGI app: what a release of a small site looks like to hupwatch.

Gunicorn serves it as ``app:app`` from the deploy's ``current`` link. Each release ships a
``RELEASE`` file next to this module; the page names it, so a reload is visible from outside.
"""

import os
from pathlib import Path

import views

HERE = Path(__file__).resolve().parent
try:
    RELEASE = (HERE / "RELEASE").read_text(encoding="utf-8").strip() or "unknown"
except OSError:
    RELEASE = "unknown"


def app(environ, start_response):
    """Answer every GET with a short text page; anything else is 405."""
    if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
        status, body = "405 Method Not Allowed", b"only GET\n"
    else:
        status = "200 OK"
        body = views.page(release=RELEASE, pid=os.getpid(), path=environ.get("PATH_INFO", "/"))
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Release", RELEASE),
        ],
    )
    return [body]
