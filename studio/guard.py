"""The studio answers only its own origin: a Host check (DNS rebinding) and a same-origin check on writes (CSRF).

* DNS rebinding: a web page on ``attacker.example`` whose name is re-pointed to 127.0.0.1 reaches the studio with
  ``Host: attacker.example``. Starlette's :class:`~starlette.middleware.trustedhost.TrustedHostMiddleware` answers
  400 to any Host header outside :func:`allowed_hosts` (port ignored).
* Cross-site requests: a page elsewhere can still send a "simple" POST or a form to ``http://127.0.0.1:7860``
  (the Host is then ours). :class:`SameOriginWrites` refuses every request other than GET/HEAD/OPTIONS whose
  ``Origin`` header is present and is not the studio's own origin, or whose ``Sec-Fetch-Site`` says
  ``cross-site`` / ``same-site``. Requests without those headers do not come from a browser page (curl, scripts).
  Reads need no check: without CORS headers a foreign page cannot read the answers.
"""
from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> list[str]:
    """Host names the studio answers to: the loopback names, the bound address and ``extra`` (e.g. the machine's
    LAN name when serving on 0.0.0.0). IPv6 literals are written in brackets, as in a Host header."""
    names = (n.strip().lower() for n in (*LOOPBACK_NAMES, bound, *extra))
    return list(dict.fromkeys(f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names if n))


class SameOriginWrites:
    """ASGI middleware: state-changing requests only from the studio's own origin (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = Headers(scope=scope)
            origin, site = headers.get("origin"), headers.get("sec-fetch-site")
            foreign_origin = origin is not None and urlsplit(origin).netloc.lower() != headers.get("host", "").lower()
            if foreign_origin or site in ("cross-site", "same-site"):
                response = JSONResponse({"detail": f"cross-origin request refused (Origin: {origin}): the studio "
                                                   "only accepts changes from its own page"}, status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
