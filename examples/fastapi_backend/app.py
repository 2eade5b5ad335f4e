"""A FastAPI backend that logs users in and mints their Clarion tokens.

    CLARION_JWT_SECRET=<the server's secret> python examples/fastapi_backend/app.py

then open http://127.0.0.1:8001, sign in with any name, and publish to that name (`clarion send
--to NAME ...`, or the page's "Notify me" button when `CLARION_API_KEY` is set). With `--static
DIR` it serves a front end (index.html and its bundle) instead of its own page: the React and
Vue examples do this. Clarion runs beside it (`clarion serve`, with the same secret).

The login is a stand-in (a name, no password) kept in an HMAC-signed cookie: put your real
login there. What matters is `token_router(current_user)`: three lines to give a logged-in user
a short-lived Clarion JWT.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs

import uvicorn
from fastapi import Cookie, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from clarion.client import publish_sync
from clarion.integrations.fastapi import token_router

COOKIE = "example_session"
# Signs the session cookie; a fresh one per start logs everyone out, which suits an example.
SESSION_KEY = os.environ.get("EXAMPLE_SESSION_KEY") or secrets.token_urlsafe(32)


def sign(user: str) -> str:
    mac = hmac.new(SESSION_KEY.encode(), user.encode(), hashlib.sha256).hexdigest()
    return f"{user}|{mac}"


def current_user(example_session: Annotated[str | None, Cookie()] = None) -> str:
    """The logged-in user's id, from the signed cookie; 401 for anyone else."""
    user, _, mac = (example_session or "").rpartition("|")
    if not user or not hmac.compare_digest(sign(user), f"{user}|{mac}"):
        raise HTTPException(401, "log in first")
    return user


def create_app(clarion_url: str, static: Path | None = None) -> FastAPI:
    app = FastAPI(title="Clarion example backend")
    # The one Clarion line: GET /clarion-token -> {"token", "expires_in"} for the logged-in user.
    app.include_router(token_router(current_user, ttl=600))

    @app.get("/login", response_class=HTMLResponse)
    def login_form() -> str:
        return LOGIN

    @app.post("/login")
    async def login(request: Request) -> RedirectResponse:
        # The form is URL-encoded: parsed here, so the example needs no multipart package.
        user = parse_qs((await request.body()).decode()).get("user", [""])[0].strip()
        if not 0 < len(user) <= 100 or "|" in user:
            raise HTTPException(422, "user: 1 to 100 characters, no '|'")
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(COOKIE, sign(user), httponly=True, samesite="lax")
        return answer

    @app.post("/logout")
    def logout() -> RedirectResponse:
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(COOKIE)
        return answer

    @app.get("/api/config")
    def config() -> dict[str, str]:
        return {"clarion_url": clarion_url}

    @app.get("/api/me")
    def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        return {"user": user}

    @app.post("/api/notify-me")
    def notify_me(user: Annotated[str, Depends(current_user)]) -> dict[str, object]:
        """Publish to yourself, as your backend would (needs CLARION_API_KEY)."""
        key = os.environ.get("CLARION_API_KEY")
        if not key:
            raise HTTPException(503, "set CLARION_API_KEY (clarion keys create) to publish")
        return publish_sync(clarion_url, key, users=[user], title=f"Hello {user}", type="message")

    @app.get("/", response_model=None)
    def index(
        example_session: Annotated[str | None, Cookie()] = None,
    ) -> FileResponse | HTMLResponse | RedirectResponse:
        try:
            current_user(example_session)
        except HTTPException:
            return RedirectResponse("/login", status_code=303)
        if static is not None:
            return FileResponse(static / "index.html")
        return HTMLResponse(PAGE.replace("{{CLARION}}", clarion_url))

    if static is not None:
        app.mount("/", StaticFiles(directory=static), name="front end")
    return app


LOGIN = """<!doctype html><meta charset="utf-8"><title>Sign in</title>
<form method="post" action="/login" style="font: 16px system-ui; margin: 4rem auto; width: 20rem">
  <h1>Sign in</h1>
  <label>Your name <input name="user" required autofocus></label>
  <button type="submit">Sign in</button>
</form>"""

PAGE = """<!doctype html><meta charset="utf-8"><title>Clarion example</title>
<header style="display: flex; gap: 1rem; align-items: center; font: 16px system-ui">
  <strong>Example app</strong>
  <clarion-inbox server="{{CLARION}}"></clarion-inbox>
  <button id="notify" type="button">Notify me</button>
</header>
<script type="module">
  import '{{CLARION}}/static/clarion-inbox.js';
  document.querySelector('clarion-inbox').getToken = async () =>
    (await (await fetch('/clarion-token')).json()).token;
  document.querySelector('#notify').onclick = () => fetch('/api/notify-me', { method: 'POST' });
</script>"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--clarion", default=os.environ.get("CLARION_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--static", type=Path, help="a front end to serve (with index.html)")
    args = parser.parse_args()
    if not os.environ.get("CLARION_JWT_SECRET"):
        parser.error("set CLARION_JWT_SECRET to the Clarion server's secret")
    uvicorn.run(create_app(args.clarion, args.static), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
