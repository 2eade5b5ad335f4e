"""No user ever receives another user's events, whatever the order of publishes, connects
and disconnects (hypothesis generates the sequences; every step uses real sockets)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.server import Live, Server
from harness.util import user_id

USERS = ["a", "b", "c"]
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("publish"),
            st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True),
        ),
        st.tuples(st.just("connect"), st.sampled_from(USERS)),
        st.tuples(st.just("disconnect"), st.sampled_from(USERS)),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps)
def test_users_only_receive_their_own(server: Server, steps: list[tuple[str, Any]]) -> None:
    run = user_id()  # fresh user names per example: examples never see each other's data
    names = {u: f"{run}-{u}" for u in USERS}
    live: dict[str, list[Live]] = {u: [] for u in USERS}
    sent: dict[str, list[str]] = {u: [] for u in USERS}
    cursors: dict[str, str | None] = dict.fromkeys(USERS)
    received: dict[str, list[str]] = {u: [] for u in USERS}

    def collect(u: str, conn: Live) -> None:
        for e in conn.drain(0.2):
            if e["type"] == "notification":
                received[u].append(e["notification"]["id"])
                assert e["stream"] == f"user:{names[u]}"

    for kind, arg in steps:
        if kind == "publish":
            r = server.publish(users=[names[u] for u in arg], title="x")
            assert r.status_code == 201
            for u in arg:
                sent[u].append(r.json()["id"])
        elif kind == "connect":
            live[arg].append(server.connect(names[arg], cursors[arg]))
        elif live[arg]:
            conn = live[arg].pop(0)
            collect(arg, conn)
            cursors[arg] = conn.cursor
            conn.close()
    for u in USERS:
        for conn in live[u]:
            collect(u, conn)
            conn.close()
        assert set(received[u]) <= set(sent[u]), f"{u} got someone else's notification"
