"""Flask: a token blueprint on the app's own "who is logged in", and `notify()`.

    from clarion.integrations.flask import token_blueprint

    app.register_blueprint(token_blueprint(lambda: session.get("user")))   # GET /clarion-token

`current_user()` returns the logged-in user (None for nobody: 401). Config keys `CLARION_URL`,
`CLARION_API_KEY`, `CLARION_JWT_SECRET` (or the same environment variables).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from clarion.client import publish_sync
from clarion.integrations import TokenIssuer


def _config(name: str, default: str | None = None) -> Any:
    return current_app.config.get(name) or os.environ.get(name) or default


def token_blueprint(
    current_user: Callable[[], Any],
    *,
    path: str = "/clarion-token",
    issuer: TokenIssuer | None = None,
    **options: Any,
) -> Blueprint:
    """A blueprint with `GET path` minting a token for `current_user()`. Options are those of
    `TokenIssuer` (`secret`, `private_key`, `ttl`, `user_id`, `roles`, `topics`, ...)."""
    blueprint = Blueprint("clarion", __name__)

    @blueprint.get(path)
    def clarion_token() -> ResponseReturnValue:
        user = current_user()
        if user is None:
            error = {"code": "unauthorized", "message": "log in first", "field": None}
            return jsonify({"error": error}), 401
        tokens = issuer or TokenIssuer(**{"secret": _config("CLARION_JWT_SECRET"), **options})
        return jsonify(tokens.issue(user)), 200, {"Cache-Control": "no-store"}

    return blueprint


def notify(**body: Any) -> dict[str, Any]:
    """Publish now (`POST /v1/notifications`); returns once Clarion stored it."""
    key = _config("CLARION_API_KEY")
    if not key:
        raise RuntimeError("set CLARION_API_KEY (clarion keys create)")
    return publish_sync(_config("CLARION_URL", "http://127.0.0.1:8000"), key, **body)
