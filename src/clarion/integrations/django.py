"""Django: a token view for logged-in users, and notifications sent after a commit.

    # urls.py
    from clarion.integrations.django import token_view
    urlpatterns = [path("clarion-token", token_view)]

    # signals.py: tell a post's author about each new comment, once the comment is committed
    @receiver(post_save, sender=Comment)
    def comment_saved(sender, instance, created, **kwargs):
        if created:
            notify_on_commit(users=[instance.post.author.username], title="New comment")

Settings: `CLARION = {"URL": ..., "API_KEY": ..., "JWT_SECRET": ..., "TOKEN_TTL": 600}`, each
falling back to `CLARION_URL`, `CLARION_API_KEY`, `CLARION_JWT_SECRET` in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse

from clarion.client import publish_sync
from clarion.integrations import TokenIssuer


def _setting(name: str, default: str | None = None) -> Any:
    configured = getattr(settings, "CLARION", {}) or {}
    return configured.get(name) or os.environ.get(f"CLARION_{name}") or default


def make_token_view(
    *,
    user_id: Callable[[Any], str] = lambda user: user.get_username(),
    roles: Callable[[Any], Sequence[str]] | None = None,
    topics: Callable[[Any], Sequence[str]] | None = None,
) -> Callable[[HttpRequest], JsonResponse]:
    """A view answering `{"token", "expires_in"}` to a logged-in user, 401 to anyone else.
    `roles` might be `lambda user: [g.name for g in user.groups.all()]`."""

    def view(request: HttpRequest) -> JsonResponse:
        user = request.user
        if not user.is_authenticated:
            error = {"code": "unauthorized", "message": "log in first", "field": None}
            return JsonResponse({"error": error}, status=401)
        issuer = TokenIssuer(
            secret=_setting("JWT_SECRET"),
            ttl=int(_setting("TOKEN_TTL", "600")),
            user_id=user_id,
            roles=roles,
            topics=topics,
        )
        answer = JsonResponse(issuer.issue(user))
        answer["Cache-Control"] = "no-store"
        return answer

    return view


token_view = make_token_view()


def notify(**body: Any) -> dict[str, Any]:
    """Publish now (`POST /v1/notifications`); returns once Clarion stored it."""
    url, key = _setting("URL", "http://127.0.0.1:8000"), _setting("API_KEY")
    if not key:
        raise RuntimeError("set CLARION['API_KEY'] or CLARION_API_KEY (clarion keys create)")
    return publish_sync(url, key, **body)


def notify_on_commit(**body: Any) -> None:
    """Publish once the current transaction commits (at once outside one): a notification
    never announces a row that was rolled back. Give an `idempotency_key` to make a retry safe."""
    transaction.on_commit(lambda: notify(**body))
