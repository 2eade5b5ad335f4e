"""Who is calling: user JWTs (for inboxes and live connections) and publisher API keys."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS

from clarion.config import Settings
from clarion.domain import ApiKey, ClarionError, Forbidden, Unauthorized
from clarion.store import Store
from clarion.streams import CONTROL, matches

SAFE_ALGORITHMS = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256"}
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_SIZE = 10_000
# What `clarion keys create` makes: `clk_<16 hex id>_<43 base64url>`. Anything else is refused
# before any work: no query, no cache entry.
KEY_FORMAT = re.compile(r"clk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


class TokenExpired(ClarionError):
    def __init__(self) -> None:
        super().__init__(401, "token_expired", "token expired")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, as its token describes it."""

    user: str
    roles: tuple[str, ...] = ()
    expires_at: float = 0.0
    claims: dict[str, Any] = field(default_factory=dict)
    topics: tuple[str, ...] = ()  # the `topics` claim: names or patterns it may follow

    def may_follow(self, topic: str) -> bool:
        return matches(topic, self.topics)

    @classmethod
    def of(cls, claims: dict[str, Any]) -> Principal:
        """From verified claims; raises `Unauthorized` when `roles`/`topics` are malformed."""
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 200 or CONTROL.search(sub):
            raise Unauthorized("invalid token: sub must be a non-empty string")
        lists = {}
        for name in ("roles", "topics"):
            value = claims.get(name) or []
            if not isinstance(value, list) or not all(
                isinstance(v, str) and 0 < len(v) <= 200 and not CONTROL.search(v) for v in value
            ):
                raise Unauthorized(f"invalid token: {name} must be a list of strings")
            if len(value) > 100:
                raise Unauthorized(f"invalid token: at most 100 {name}")
            lists[name] = tuple(value)
        return cls(sub, lists["roles"], float(claims["exp"]), claims, lists["topics"])


class _Secret(HMACAlgorithm):
    """HMAC whose key checks run once per secret, not once per token.

    PyJWT's `prepare_key` makes sure an HMAC secret is not a PEM, SSH, DER or JWK text (a
    guard against algorithm confusion) on every verification: a fifth of a token's cost.
    The outcome for a given secret never changes, so the last secret's is kept."""

    def __init__(self, hash_alg: Any) -> None:
        super().__init__(hash_alg)
        self._last: tuple[str | bytes, bytes] | None = None

    def prepare_key(self, key: str | bytes) -> bytes:
        last = self._last
        if last is not None and type(last[0]) is type(key) and last[0] == key:
            return last[1]
        prepared = super().prepare_key(key)
        self._last = (key, prepared)
        return prepared


_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")


class _Segments(PyJWS):
    """PyJWS with its segment check done by one regular expression: PyJWT 2.15 tests each
    character of a segment against the base64url alphabet in a Python generator, a third of
    a token's verification (5% of a connect storm's CPU). Same rules, same errors, same
    order (tests/test_auth.py compares the two on arbitrary segments)."""

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        if padding > 2 or (padding and len(segment) % 4 != 0):
            raise jwt.DecodeError(f"Invalid {name} padding")
        if len(stripped) % 4 == 1 or _SEGMENT.fullmatch(stripped) is None:
            raise jwt.DecodeError(f"Invalid {name} padding")
        try:
            decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
        except (TypeError, binascii.Error) as err:
            raise jwt.DecodeError(f"Invalid {name} padding") from err
        if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped:
            raise jwt.DecodeError(f"Invalid {name} padding")
        return decoded


class _Decoder(jwt.PyJWT):
    """PyJWT with its extension points used: the payload parsed by orjson, HMAC keys
    checked once (`_Secret`), segments checked by a regular expression (`_Segments`).
    Everything else (signature, header and claim rules) is PyJWT's."""

    def __init__(self) -> None:
        super().__init__()
        self._jws = _Segments(options=self._get_sig_options())
        for name, hash_alg in (
            ("HS256", HMACAlgorithm.SHA256),
            ("HS384", HMACAlgorithm.SHA384),
            ("HS512", HMACAlgorithm.SHA512),
        ):
            self._jws.unregister_algorithm(name)
            self._jws.register_algorithm(name, _Secret(hash_alg))

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        try:
            payload = orjson.loads(decoded["payload"])
        except orjson.JSONDecodeError as exc:
            raise jwt.DecodeError(f"Invalid payload string: {exc}") from None
        if not isinstance(payload, dict):
            raise jwt.DecodeError("Invalid payload string: must be a json object")
        return payload


MAX_SHAPES = 64
LEEWAY = 5  # seconds of clock skew allowed on `exp`, `nbf` and `iat`
VERIFIED_CACHE_SIZE = 20_000  # tokens; about 0.7 KB each


class Tokens:
    """Verifies user JWTs against an algorithm allow-list; mints them when holding a secret."""

    def __init__(self, settings: Settings) -> None:
        algorithms = [a for a in settings.jwt_algorithms if a in SAFE_ALGORITHMS]
        if not algorithms:
            raise ValueError(f"no usable JWT algorithm in {settings.jwt_algorithms}")
        self.algorithms = algorithms
        self.settings = settings
        self.secret = settings.jwt_secret  # or the database's, once `load` ran
        self.public_key = settings.jwt_public_key
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.ttl = settings.token_ttl
        self.max_ttl = settings.max_token_ttl
        self.jwks = jwt.PyJWKClient(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
        self._shapes: dict[str, str] = {}  # header segment -> its allowed algorithm
        self._verified: dict[str, Principal] = {}  # exact token -> principal, verified only
        self._decoder = _Decoder()
        self.cache_size = VERIFIED_CACHE_SIZE

    async def load(self, store: Store) -> None:
        """Without a configured secret or key, the HS256 secret is generated once and kept in
        the database (like the VAPID key), so every node and every `clarion token` on that
        database signs and verifies alike. A secret a former version kept in a file
        (`clarion.db.secret`) is adopted, so tokens minted before an upgrade stay valid."""
        s = self.settings
        if s.jwt_secret or s.jwt_public_key or s.jwt_jwks_url:
            return
        legacy = s.legacy_secret_file()

        def make() -> str:
            if legacy is not None and legacy.is_file():
                return legacy.read_text().strip()
            return secrets.token_urlsafe(48)

        self.secret = await store.setting("jwt_secret", make)

    def mint(
        self,
        user: str,
        roles: list[str] | None = None,
        ttl: int | None = None,
        topics: list[str] | None = None,
    ) -> str:
        if not self.secret:
            raise RuntimeError("minting needs CLARION_JWT_SECRET (HS256)")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user, "iat": now, "exp": now + (ttl or self.ttl)}
        if roles:
            claims["roles"] = roles
        if topics:
            claims["topics"] = topics
        if self.audience:
            claims["aud"] = self.audience
        if self.issuer:
            claims["iss"] = self.issuer
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def _alg(self, token: str) -> str:
        """The token's allowed algorithm. Every token an app mints has the same header (its
        "shape": `alg`, `typ`, maybe `kid`), so the parse and the check are kept per header
        segment: a connect storm decodes one header, not one per handshake. At most
        `MAX_SHAPES` are kept, so made-up headers cost a parse each and no memory."""
        shape = token.partition(".")[0]
        alg = self._shapes.get(shape)
        if alg is not None:
            return alg
        alg = jwt.get_unverified_header(token).get("alg")
        if alg not in self.algorithms:
            raise jwt.InvalidAlgorithmError(f"algorithm {alg!r} is not allowed")
        if len(self._shapes) < MAX_SHAPES:
            self._shapes[shape] = alg
        return str(alg)

    def _key(self, token: str) -> Any:
        alg = self._alg(token)
        if alg.startswith("HS"):
            if not self.secret:
                raise jwt.InvalidKeyError("no HMAC secret configured")
            return self.secret
        if self.jwks is not None:
            return self.jwks.get_signing_key_from_jwt(token).key
        if not self.public_key:
            raise jwt.InvalidKeyError("no public key configured")
        return self.public_key

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; `Unauthorized` or `TokenExpired` otherwise.

        A reconnect storm presents the same tokens again: a token that verified is kept,
        keyed by its exact text, and taken back without parsing until its `exp` (plus the
        leeway) passes, then verified afresh (and refused). Only verified tokens are kept, at
        most `cache_size` (the oldest go first), so made-up tokens cost no memory and
        a changed byte is a miss. Tokens cannot be revoked other than by expiring, and the
        keys are fixed for the process, so what was valid stays valid until `exp`. A JWKS key
        can be withdrawn at any time: with `CLARION_JWT_JWKS_URL` nothing is kept."""
        token = token.strip()  # `clarion token u > file` ends it with a newline
        hit = self._verified.get(token)
        if hit is not None:
            if time.time() < hit.expires_at + LEEWAY:
                return hit
            del self._verified[token]
        principal = self._verify(token)
        if self.jwks is None:
            if len(self._verified) >= self.cache_size:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = principal
        return principal

    def _verify(self, token: str) -> Principal:
        try:
            claims = self._decoder.decode(
                token,
                self._key(token),
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
                leeway=LEEWAY,
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        if float(claims["exp"]) > time.time() + self.max_ttl:
            raise Unauthorized(f"invalid token: exp is more than {self.max_ttl} s ahead")
        return Principal.of(claims)

    async def verify_async(self, token: str) -> Principal:
        """As `verify`; a JWKS lookup may hit the network, so it runs in a thread."""
        if self.jwks is not None:
            return await asyncio.to_thread(self.verify, token)
        return self.verify(token)


def bearer(header: str | None) -> str:
    if not header:
        raise Unauthorized("missing Authorization header")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    return value.strip()


class Keys:
    """Publisher API key checks. Keys that verified are cached a few seconds, so publishing
    costs no extra query; nothing else is remembered, so unknown keys cost no memory."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, ApiKey]] = {}

    async def check(self, header: str | None, scope: str) -> ApiKey:
        secret = bearer(header)
        if not KEY_FORMAT.fullmatch(secret):
            raise Unauthorized("malformed API key")
        now = time.monotonic()
        hit = self._cache.get(secret)
        if hit is not None and hit[0] >= now:
            key: ApiKey | None = hit[1]
        else:
            key = await self.store.verify_key(secret)
            if key is None:
                self._cache.pop(secret, None)
            else:
                if len(self._cache) >= KEY_CACHE_SIZE:
                    self._cache.clear()
                self._cache[secret] = (now + KEY_CACHE_SECONDS, key)
        if key is None:
            raise Unauthorized("invalid, revoked or expired API key")
        if scope == "admin" and key.scope != "admin":
            raise Forbidden("this API key lacks the admin scope")
        return key

    def known(self, header: str | None) -> ApiKey | None:
        """The key in `header` if it verified in the last few seconds; no I/O, never raises."""
        _, _, secret = (header or "").partition(" ")
        hit = self._cache.get(secret)
        return hit[1] if hit is not None and hit[0] >= time.monotonic() else None

    def forget(self) -> None:
        self._cache.clear()


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """The one origin policy, for CORS and for WebSocket/SSE/poll Origin checks.

    Browsers send Origin; other clients do not and are judged by their credentials alone. The
    server's own origin (Origin's host:port is the request's Host) is always allowed, so setting
    `allowed_origins` never takes the server's own pages offline. Without a list, pages served
    from loopback (a developer's laptop) are allowed too. `host` is None for CORS, where the
    server's own origin needs no header.
    """
    if not origin:
        return True
    parts = urlsplit(origin)
    if host and parts.netloc == host:
        return True
    if allowed:
        return "*" in allowed or origin in allowed
    return parts.hostname in ("localhost", "127.0.0.1", "::1")
