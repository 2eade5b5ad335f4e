"""User tokens: bad, expired, `alg: none` and wrong-key JWTs are refused on every door."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import httpx
import jwt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.api_jws import PyJWS
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from clarion.auth import MAX_SHAPES, VERIFIED_CACHE_SIZE, TokenExpired, Tokens, _Segments
from clarion.config import Settings
from clarion.domain import Unauthorized
from harness.server import Server


def _none_alg(user: str) -> str:
    def b64(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(d)).rstrip(b"=").decode()

    return (
        f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': user, 'exp': int(time.time()) + 60})}."
    )


def bad_tokens(server: Server) -> dict[str, str]:
    now = int(time.time())
    return {
        "garbage": "not-a-jwt",
        "alg_none": _none_alg("alice"),
        "wrong_key": jwt.encode(
            {"sub": "alice", "exp": now + 60},
            "other-secret-000000000000000000000",
            algorithm="HS256",
        ),
        "no_exp": jwt.encode({"sub": "alice"}, server.secret, algorithm="HS256"),
        "no_sub": jwt.encode({"exp": now + 60}, server.secret, algorithm="HS256"),
        "hs512_not_allowed": jwt.encode(
            {"sub": "alice", "exp": now + 60}, server.secret, algorithm="HS512"
        ),
    }


@pytest.mark.parametrize(
    "kind", ["garbage", "alg_none", "wrong_key", "no_exp", "no_sub", "hs512_not_allowed"]
)
def test_bad_tokens_refused_on_http(server: Server, kind: str) -> None:
    token = bad_tokens(server)[kind]
    for path in ("/v1/me/notifications", "/v1/me/unread-count", "/v1/poll"):
        r = httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (kind, path, r.text)
        assert r.json()["error"]["code"] == "unauthorized"


def test_expired_token_refused_with_its_own_code(server: Server) -> None:
    token = server.token("alice", ttl=-60)
    r = httpx.get(server.url + "/v1/me/notifications", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired"


def _ws_close(server: Server, first: str) -> tuple[int, str]:
    with connect(server.ws_url) as ws:
        ws.send(first)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


@pytest.mark.parametrize(
    "kind", ["garbage", "alg_none", "wrong_key", "no_exp", "no_sub", "hs512_not_allowed"]
)
def test_bad_tokens_refused_on_websocket(server: Server, kind: str) -> None:
    token = bad_tokens(server)[kind]
    code, _ = _ws_close(server, orjson.dumps({"type": "auth", "token": token}).decode())
    assert code == 4001


def test_expired_token_closes_4002(server: Server) -> None:
    token = server.token("alice", ttl=-60)
    code, reason = _ws_close(server, orjson.dumps({"type": "auth", "token": token}).decode())
    assert (code, reason) == (4002, "token expired")


def test_token_expiring_while_connected_closes_4002(server: Server) -> None:
    with connect(server.ws_url) as ws:
        ws.send(orjson.dumps({"type": "auth", "token": server.token("alice", ttl=2)}).decode())
        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.recv(timeout=15)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4002


def test_refreshing_the_token_keeps_the_connection(server: Server) -> None:
    with connect(server.ws_url) as ws:
        ws.send(orjson.dumps({"type": "auth", "token": server.token("alice", ttl=2)}).decode())
        ws.send(orjson.dumps({"type": "auth", "token": server.token("alice", ttl=600)}).decode())
        time.sleep(3.5)
        ws.send('{"type":"ping"}')
        kinds = []
        while "pong" not in kinds:
            kinds.append(orjson.loads(ws.recv(timeout=5))["type"])


def test_refresh_for_another_user_is_refused(server: Server) -> None:
    with connect(server.ws_url) as ws:
        ws.send(orjson.dumps({"type": "auth", "token": server.token("alice")}).decode())
        ws.send(orjson.dumps({"type": "auth", "token": server.token("mallory")}).decode())
        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4001


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", 4000),
        ('["auth"]', 4000),
        ('{"type": "hello"}', 4000),
        ('{"type": "auth"}', 4000),
        ('{"type": "auth", "token": "x", "cursor": "!!!"}', 4000),
    ],
)
def test_malformed_first_frames(server: Server, frame: str, code: int) -> None:
    assert _ws_close(server, frame)[0] == code


def test_oversized_frame_closes_1009(server: Server) -> None:
    with connect(server.ws_url, max_size=None) as ws:
        ws.send(orjson.dumps({"type": "auth", "token": server.token("alice")}).decode())
        ws.recv(timeout=5)
        ws.send("x" * 200_000)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def test_foreign_origin_is_refused(server: Server) -> None:
    with (
        connect(server.ws_url, origin="https://evil.example") as ws,  # type: ignore[arg-type]
        pytest.raises(ConnectionClosed) as info,
    ):
        ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4003
    r = httpx.get(
        server.url + "/v1/poll",
        headers={**server.me("alice"), "Origin": "https://evil.example"},
    )
    assert r.status_code == 403


def test_sse_ticket_is_single_use_and_keeps_jwt_out_of_urls(server: Server) -> None:
    r = httpx.post(server.url + "/v1/tickets", headers=server.me("alice"))
    ticket = r.json()["ticket"]
    with httpx.stream("GET", server.url + "/v1/sse", params={"ticket": ticket}, timeout=5) as resp:
        assert resp.status_code == 200
    again = httpx.get(server.url + "/v1/sse", params={"ticket": ticket}, timeout=5)
    assert again.status_code == 401
    assert httpx.get(server.url + "/v1/sse", params={"ticket": "forged"}).status_code == 401


def test_header_shapes_are_checked_once_and_kept_bounded() -> None:
    """The header's algorithm check is kept per header segment (a connect storm parses one
    header); the signature and claims are still checked for every token, and made-up headers
    are refused without growing what is kept."""
    tokens = Tokens(Settings(jwt_secret="s" * 48))
    for user in ("a", "b", "c"):
        assert tokens.verify(tokens.mint(user)).user == user
    assert len(tokens._shapes) == 1
    now = int(time.time())
    forged = jwt.encode({"sub": "a", "exp": now + 60}, "other-" * 8, algorithm="HS256")
    assert forged.partition(".")[0] == tokens.mint("a").partition(".")[0]  # same shape
    with pytest.raises(Unauthorized):
        tokens.verify(forged)
    with pytest.raises(Unauthorized):
        tokens.verify(jwt.encode({"sub": "a", "exp": now + 60}, "s" * 48, algorithm="HS512"))
    for i in range(3 * MAX_SHAPES):
        odd = jwt.encode({"sub": "a", "exp": now + 60}, "s" * 48, headers={"kid": str(i)})
        assert tokens.verify(odd).user == "a"
        with pytest.raises(Unauthorized):
            tokens.verify(_none_alg("a") + str(i))
    assert len(tokens._shapes) == MAX_SHAPES


def test_verified_tokens_are_kept_until_they_expire() -> None:
    """A reconnect storm presents the same tokens again: a verified token is taken back from
    memory, only by its exact text, and refused once its `exp` (plus the leeway) has passed."""
    tokens = Tokens(Settings(jwt_secret="s" * 48))
    token = tokens.mint("alice")
    first = tokens.verify(token)
    assert tokens.verify(token + "\n") is first  # kept: not parsed again
    assert len(tokens._verified) == 1
    other = jwt.encode(  # same claims, another key: never matches what is kept
        jwt.decode(token, options={"verify_signature": False}), "x" * 48, algorithm="HS256"
    )
    with pytest.raises(Unauthorized):
        tokens.verify(other)
    with pytest.raises(Unauthorized):
        tokens.verify(token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert len(tokens._verified) == 1  # refused tokens are not kept

    exp = int(time.time()) - 3  # still valid within the 5 s leeway, for about 2 s
    ending = jwt.encode({"sub": "bob", "exp": exp}, "s" * 48, algorithm="HS256")
    assert tokens.verify(ending).user == "bob"
    time.sleep(max(0.0, exp + 5 - time.time()) + 0.1)
    with pytest.raises(TokenExpired):
        tokens.verify(ending)
    assert ending not in tokens._verified


def test_verified_tokens_kept_are_bounded() -> None:
    tokens = Tokens(Settings(jwt_secret="s" * 48))
    assert tokens.cache_size == VERIFIED_CACHE_SIZE
    tokens.cache_size = 3
    minted = [tokens.mint(f"u{i}") for i in range(5)]
    for token in minted:
        tokens.verify(token)
    assert list(tokens._verified) == minted[2:]  # the oldest went first


def test_an_asymmetric_key_as_hmac_secret_is_still_refused() -> None:
    """HMAC keys are checked once per secret, not once per token (auth._Secret); the check
    itself (no PEM text as an HMAC secret: algorithm confusion) still holds, every time."""
    pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZ\n-----END PUBLIC KEY-----"
    tokens = Tokens(Settings(jwt_secret=pem))

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    body = b64(orjson.dumps({"sub": "mallory", "exp": int(time.time()) + 60}))
    mac = hmac.new(pem.encode(), head + b"." + body, hashlib.sha256).digest()
    forged = (head + b"." + body + b"." + b64(mac)).decode()
    for _ in range(2):
        with pytest.raises(Unauthorized, match="asymmetric key"):
            tokens.verify(forged)
    assert not tokens._verified


def _outcome(check: object, segment: bytes) -> tuple[str, object]:
    try:
        return ("ok", check(segment, "header"))  # type: ignore[operator]
    except jwt.DecodeError as exc:
        return ("error", str(exc))


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=24),
        st.text(alphabet="AQgw09_-=+/!. \n", max_size=24).map(str.encode),
        st.binary(max_size=18).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")),
        st.binary(max_size=18).map(base64.urlsafe_b64encode),
    )
)
def test_segment_check_matches_pyjwt(segment: bytes) -> None:
    """auth._Segments checks a segment with a regular expression where PyJWT walks its
    characters: every segment (valid, padded, over-padded, non-canonical, junk) must get
    the very same bytes or the very same error from both."""
    theirs = _outcome(PyJWS._decode_base64url_segment, segment)
    assert _outcome(_Segments._decode_base64url_segment, segment) == theirs


def test_tokens_with_bad_segments_are_refused() -> None:
    tokens = Tokens(Settings(jwt_secret="s" * 48))
    head, body, mac = tokens.mint("u1").split(".")
    for forged in (f"{head}.{body}!.{mac}", f"{head}.{body}.{mac}===", f"{head}.{body[:-1]}.{mac}"):
        with pytest.raises(Unauthorized):
            tokens.verify(forged)
    assert tokens.verify(f"{head}.{body}.{mac}").user == "u1"
