"""A node's heartbeat costs the same whatever it holds, and `when: offline` follows node death.

Presence and `online` rows are written when users come and go; the beat is one `node_beats`
row. Counted through the database driver (statements and rows written), with 10 and 1,000
users held, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from clarion.domain import Draft, Escalation, Profile, iso
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.presence import Presence, come_and_go
from clarion.store import SQLStore
from clarion.store.schema import email_outbox

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
WRITES = ("INSERT", "UPDATE", "DELETE")


class Written:
    """Write statements sent to the database and the rows they changed (any engine)."""

    def __init__(self) -> None:
        self.statements = 0
        self.rows = 0

    def __enter__(self) -> Written:
        event.listen(Engine, "after_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(Engine, "after_cursor_execute", self._seen)

    def _seen(self, _c: Any, cursor: Any, statement: str, params: Any, _x: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(WRITES):
            self.statements += 1
            sets = len(params) if many else 1
            self.rows += max(cursor.rowcount, sets) if cursor.rowcount >= 0 else sets


def test_come_and_go_is_decided_per_user_on_the_node() -> None:
    arrived, departed = come_and_go({"ann", "bo", "cy", "di"}, {"ann", "bo"}, {"bo", "cy"})
    assert (arrived, departed) == (["ann"], ["cy"])  # bo stays, di came and went in a batch


async def test_a_beat_writes_the_same_whatever_the_node_holds(sql_store: SQLStore) -> None:
    """After the users came, batches with nothing new write the node's beat row, one every
    `beat_every` seconds (3 s of `presence_stale`'s 15), and the housekeeping writes nothing."""
    per_size = []
    for n in (10, 1000):
        presence = Presence(sql_store.presence, 15)
        presence.node = f"beat-{n}"
        for i in range(n):
            presence.connected(f"u{n}-{i}", "websocket")
        await presence.flush(T0)
        with Written() as written:
            for s in range(1, 7):  # one batch a second: beats at T0 + 3 s and T0 + 6 s
                await presence.flush(T0 + timedelta(seconds=s))
                await sql_store.beat(T0 + timedelta(seconds=s))
        per_size.append((written.statements, written.rows))
        assert (await presence.of(f"u{n}-0", T0 + timedelta(seconds=6)))["online"]
    assert per_size[0] == per_size[1] == (2, 2)


async def test_a_change_is_written_at_once_and_an_idle_node_still_beats(
    sql_store: SQLStore,
) -> None:
    """Skipping the idle beats never delays what changed: a user coming or going is written
    with the next batch, whenever the last beat was; and an idle node's beat keeps its users
    online past `presence_stale` (the beat, not the batches, is what keeps them)."""
    presence = Presence(sql_store.presence, 15)
    presence.node = f"idle-{new_id()[-8:]}"
    ann, bo = f"ann-{new_id()}", f"bo-{new_id()}"
    presence.connected(ann, "websocket")
    assert await presence.flush(T0) == ([ann], [])
    presence.connected(bo, "sse")
    assert await presence.flush(T0 + timedelta(seconds=1)) == ([bo], [])  # 1 s after a beat
    presence.disconnected(ann, "websocket")
    assert await presence.flush(T0 + timedelta(seconds=2)) == ([], [ann])
    with Written() as written:
        await presence.flush(T0 + timedelta(seconds=3))  # nothing new, beat 1 s old: no write
    assert written.statements == 0
    for s in range(4, 40):
        await presence.flush(T0 + timedelta(seconds=s))
    at = T0 + timedelta(seconds=39)
    assert (await presence.of(bo, at))["online"]  # 37 s after bo came: the beats kept him
    assert not (await presence.of(ann, at))["online"]


def _draft(users: list[str], at: datetime) -> Draft:
    nid = new_id()
    doc = notification_doc(nid, iso(at), type="alert", priority="normal", title=nid)
    rule = Escalation(channel="email", after=0, unless="seen", offline=True)
    return Draft(nid, "alert", "normal", doc, at, users=users, escalate=(rule,))


async def test_when_offline_ends_where_the_node_died_or_the_user_left(
    sql_store: SQLStore,
) -> None:
    """ann's node dies after its beat at T0+60 s; bo leaves his (alive) node at T0+120 s.
    A notification published while each was connected is not emailed to them; one published
    later (past the slack of 3 x 5 s heartbeats) is."""
    ann, bo = f"ann-{new_id()}", f"bo-{new_id()}"
    await sql_store.put_profiles([Profile(ann, email="a@x.test"), Profile(bo, email="b@x.test")])
    dies, stays = Presence(sql_store.presence, 15), Presence(sql_store.presence, 15)
    dies.node, stays.node = f"dies-{new_id()[-8:]}", f"stays-{new_id()[-8:]}"
    dies.connected(ann, "websocket")
    stays.connected(bo, "sse")
    await dies.flush(T0)
    await stays.flush(T0)
    await dies.flush(T0 + timedelta(seconds=60))  # its last beat
    stays.disconnected(bo, "sse")
    await stays.flush(T0 + timedelta(seconds=120))
    await stays.flush(T0 + timedelta(seconds=400))  # bo's node lives on
    both = [ann, bo]
    during = _draft(both, T0 + timedelta(seconds=30))  # both connected
    between = _draft(both, T0 + timedelta(seconds=100))  # ann's node dead, bo still there
    after = _draft(both, T0 + timedelta(seconds=300))  # both gone
    await sql_store.publish([during, between, after])
    now = T0 + timedelta(seconds=400)
    assert not (await dies.of(ann, now))["online"]
    assert await sql_store.sweep(now, 5.0) == 3
    async with sql_store.db.read() as conn:
        rows = await conn.execute(select(email_outbox.c.notification_id, email_outbox.c.user_id))
        got = set(rows.all())
    assert got == {(between.id, ann), (after.id, ann), (after.id, bo)}


@pytest.mark.parametrize("sql_url", ["sqlite"], indirect=True)
async def test_nodes_long_dead_are_closed_and_removed(sql_store: SQLStore) -> None:
    """The housekeeping closes a dead node's intervals at its last beat and drops its rows;
    an interval older than any escalation's delay goes too."""
    from clarion.store.escalations import intervals

    gone = Presence(sql_store.presence, 15)
    gone.node = "gone-node"
    gone.connected("cy", "websocket")
    await gone.flush(T0)
    assert await sql_store.beat(T0 + timedelta(minutes=30)) == 0
    assert await sql_store.beat(T0 + timedelta(hours=2)) >= 1  # this node and the others here
    async with sql_store.db.read() as conn:
        assert await intervals(conn, ["cy"]) == {"cy": ((T0, T0),)}
    assert await sql_store.beat(T0 + timedelta(days=31, hours=2)) >= 1
    async with sql_store.db.read() as conn:
        assert await intervals(conn, ["cy"]) == {}


async def test_a_node_restarted_under_the_same_name_does_not_revive_its_old_rows(
    sql_store: SQLStore,
) -> None:
    """A process that died leaves its rows; a new one with the same name (same host and pid)
    closes them at the old beat instead of beating them back to life."""
    from clarion.store.escalations import intervals

    name, eve = f"same-{new_id()[-8:]}", f"eve-{new_id()}"
    old = Presence(sql_store.presence, 15)
    old.node = name
    old.connected(eve, "websocket")
    await old.flush(T0)  # then it dies
    new = Presence(sql_store.presence, 15)
    new.node = name
    await new.flush(T0 + timedelta(seconds=60))
    assert not (await new.of(eve, T0 + timedelta(seconds=61)))["online"]
    async with sql_store.db.read() as conn:
        assert await intervals(conn, [eve]) == {eve: ((T0, T0),)}
