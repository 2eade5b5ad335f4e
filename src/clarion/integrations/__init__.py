"""Small helpers for the web frameworks an application backend is written in.

The backend authenticates its users; Clarion keeps no passwords. What these modules add is the
three lines that hand a logged-in user a short-lived Clarion JWT (the browser's `getToken`), and
a way to publish from synchronous code:

- `clarion.integrations.fastapi`: `token_router(current_user)`, a route on your dependency.
- `clarion.integrations.django`: `token_view`, `notify()`, `notify_on_commit()`.
- `clarion.integrations.flask`: `token_blueprint(current_user)`, `notify()`.

Each imports its framework only when imported itself: install `clarion[django]` or
`clarion[flask]` (FastAPI comes with Clarion). docs/client.md, "Backends", shows them in use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clarion.client import mint_token


@dataclass(frozen=True)
class TokenIssuer:
    """How a backend mints browser tokens: its key, their life, and the claims of a user.

    `user_id`, `roles` and `topics` take the framework's user object; `secret` defaults to
    `CLARION_JWT_SECRET`, or sign with an RSA/EC `private_key` (see `mint_token`).
    """

    secret: str | None = None
    private_key: str | bytes | None = None
    ttl: int = 600
    user_id: Callable[[Any], str] = str
    roles: Callable[[Any], Sequence[str]] | None = None
    topics: Callable[[Any], Sequence[str]] | None = None
    audience: str | None = None
    issuer: str | None = None

    def issue(self, user: Any) -> dict[str, Any]:
        """The JSON a token endpoint answers: `{"token": ..., "expires_in": seconds}`."""
        token = mint_token(
            self.user_id(user),
            roles=self.roles(user) if self.roles else (),
            topics=self.topics(user) if self.topics else (),
            ttl=self.ttl,
            secret=self.secret,
            private_key=self.private_key,
            audience=self.audience,
            issuer=self.issuer,
        )
        return {"token": token, "expires_in": self.ttl}
