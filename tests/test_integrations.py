"""`clarion.client.mint_token` and the framework integrations, against a real server: the
tokens they mint must be accepted where the browser uses them."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from clarion.auth import Tokens
from clarion.client import ClarionError, mint_token, publish_sync
from clarion.config import Settings
from clarion.domain import Unauthorized
from clarion.integrations import TokenIssuer
from clarion.integrations.fastapi import token_router
from harness.server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("integrations")).start()
    yield srv
    srv.kill(signal.SIGTERM)


def accepted(server: Server, token: str) -> bool:
    """Whether the server takes the token (the inbox API, as the browser calls it)."""
    answer = httpx.get(
        server.url + "/v1/me/unread-count",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def test_hs256_token_is_accepted_with_its_claims(server: Server) -> None:
    token = mint_token("alice", roles=["admin"], topics=["project:*"], secret=server.secret)
    assert accepted(server, token)
    claims = jwt.decode(token, server.secret, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["admin"]
    assert claims["topics"] == ["project:*"]
    assert claims["exp"] - claims["iat"] == 600
    assert not accepted(server, mint_token("alice", secret="another-secret-0000000000000000000"))


def test_secret_defaults_to_the_environment(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLARION_JWT_SECRET", server.secret)
    assert accepted(server, mint_token("bob", ttl=60))
    monkeypatch.delenv("CLARION_JWT_SECRET")
    with pytest.raises(ValueError, match="CLARION_JWT_SECRET"):
        mint_token("bob")


@pytest.mark.parametrize("bad", [{"user": ""}, {"user": "x", "ttl": 0}])
def test_bad_arguments_are_refused(bad: dict[str, object]) -> None:
    user = str(bad.pop("user"))
    with pytest.raises(ValueError, match="mint_token"):
        mint_token(user, secret="s" * 32, **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "algorithm"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
    ids=["rs256", "es256"],
)
def test_private_key_tokens_pass_the_servers_verifier(make: object, algorithm: str) -> None:
    """RS256/ES256 through `clarion.auth.Tokens`, the code every door of the server verifies
    with, configured as `CLARION_JWT_PUBLIC_KEY` and `CLARION_JWT_ALGORITHMS` would."""
    private, public = pem(make())  # type: ignore[operator]
    tokens = Tokens(Settings(jwt_public_key=public, jwt_algorithms=[algorithm]))
    token = mint_token("carol", roles=["ops"], private_key=private, key_id="k1")
    assert jwt.get_unverified_header(token) == {"alg": algorithm, "kid": "k1", "typ": "JWT"}
    principal = tokens.verify(token)
    assert (principal.user, principal.roles) == ("carol", ("ops",))
    other, _ = pem(make())  # type: ignore[operator]
    with pytest.raises(Unauthorized):
        tokens.verify(mint_token("carol", private_key=other))


def test_fastapi_token_router(server: Server) -> None:
    def current_user(x_user: str | None = Header(default=None)) -> str:
        if not x_user:
            raise HTTPException(401, "log in first")
        return x_user

    app = FastAPI()
    app.include_router(token_router(current_user, secret=server.secret, roles=lambda u: ["staff"]))
    with TestClient(app) as http:
        assert http.get("/clarion-token").status_code == 401
        answer = http.get("/clarion-token", headers={"X-User": "dave"})
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["expires_in"] == 600
    assert accepted(server, body["token"])
    assert jwt.decode(body["token"], server.secret, algorithms=["HS256"])["roles"] == ["staff"]


def test_flask_token_blueprint_and_notify(server: Server) -> None:
    flask = pytest.importorskip(
        "flask", reason="Flask is an optional extra: pip install clarion[flask]"
    )
    from clarion.integrations.flask import notify, token_blueprint

    app = flask.Flask(__name__)
    app.config.update(
        CLARION_JWT_SECRET=server.secret, CLARION_URL=server.url, CLARION_API_KEY=server.api_key
    )
    app.register_blueprint(token_blueprint(lambda: flask.request.headers.get("X-User")))
    http = app.test_client()
    assert http.get("/clarion-token").status_code == 401
    token = http.get("/clarion-token", headers={"X-User": "erin"}).get_json()["token"]
    assert accepted(server, token)
    with app.app_context():
        answer = notify(users=["erin"], title="From Flask")
    assert answer["id"]
    inbox = httpx.get(server.url + "/v1/me/notifications", headers=server.me("erin"), timeout=10)
    assert [n["title"] for n in inbox.json()["items"]] == ["From Flask"]


def test_publish_sync_raises_the_servers_error(server: Server) -> None:
    with pytest.raises(ClarionError) as caught:
        publish_sync(server.url, server.api_key, users=["x"], title="t", priority="urgent")
    assert caught.value.status == 422
    assert caught.value.field is not None and "priority" in caught.value.field
    issuer = TokenIssuer(secret=server.secret, user_id=lambda u: u["name"], ttl=30)
    assert issuer.issue({"name": "frank"})["expires_in"] == 30
