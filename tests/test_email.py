"""The email channel through a real `clarion serve` and a real SMTP server (aiosmtpd): profiles,
seen, templates and locales, escalation, retries, bad addresses, one-click unsubscribe,
erasure. Escalations here are due at once (`after: 0`) or in a second; the tests wait for
the store to show the sweep ran, never for a time."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from harness.server import Server
from harness.services import node_database
from harness.smtp import Mailbox, address, api, make_due, profile, query, sweep_done
from harness.util import eventually, send, user_id
from harness.webhooks import Receiver

EMAIL_ENV = {
    "CLARION_EMAIL_FROM": "Clarion <notify@example.com>",
    "CLARION_EMAIL_INTERVAL": "0.1",
    "CLARION_EMAIL_RETRY_SECONDS": "0.2",
    "CLARION_EMAIL_MAX_ATTEMPTS": "3",
    "CLARION_ONLINE_INTERVAL": "0.2",
    "CLARION_APP_URL": "https://app.example.com",
    "CLARION_WEBHOOK_ALLOW_LOOPBACK": "true",
    "CLARION_WEBHOOK_INTERVAL": "0.1",
}


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture(scope="module")
def mailer(tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox) -> Iterator[Server]:
    """One node sending through the mailbox."""
    with node_database() as env:
        srv = Server(tmp_path_factory.mktemp("email"), {**env, **EMAIL_ENV})
        srv.env |= {"CLARION_SMTP_URL": mailbox.url, "CLARION_PUBLIC_URL": srv.url}
        srv.start()
        yield srv
        srv.kill(signal.SIGTERM)


def admin_key(server: Server) -> str:
    if not hasattr(server, "_admin"):
        server._admin = server.cli("keys", "create", "--scope", "admin", "--name", "admin")  # type: ignore[attr-defined]
    return server._admin  # type: ignore[attr-defined,no-any-return]


def put_type(server: Server, type: str, **body: Any) -> httpx.Response:
    return httpx.put(
        f"{server.url}/v1/types/{type}",
        json=body,
        headers={"Authorization": f"Bearer {admin_key(server)}"},
        timeout=30,
    )


NOW = [{"channel": "email", "after": 0}]


# -- profiles ------------------------------------------------------------------------------


def test_profiles_put_get_and_refuse_bad_fields(mailer: Server) -> None:
    user = user_id()
    got = profile(mailer, user, email="ann@example.com", name="Ann", locale="fr-CA", data={"a": 1})
    assert got["email"] == "ann@example.com" and got["locale"] == "fr-CA"
    assert api(mailer, "GET", f"/v1/users/{user}").json()["name"] == "Ann"
    for field, value in (
        ("email", "not an address"),
        ("locale", "fr_CA!"),
        ("timezone", "Mars/Base"),
    ):
        r = api(mailer, "PUT", f"/v1/users/{user}", json={field: value})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == field
    assert api(mailer, "GET", f"/v1/users/{user_id()}").status_code == 404
    r = httpx.get(f"{mailer.url}/v1/users/{user}", timeout=10)
    assert r.status_code == 401  # a publisher key is needed


# -- email, templates and locales -------------------------------------------------------------


def test_email_in_the_users_locale_with_escaped_content(mailer: Server, mailbox: Mailbox) -> None:
    kind = "comment-" + user_id()
    r = put_type(
        mailer,
        kind,
        locale="en",
        templates={
            "email": {
                "en": {
                    "subject": "New comment: {{ title }}",
                    "html": "<p>{{ actor.name }} wrote {{ data.text }}</p>",
                    "text": "{{ actor.name }} wrote {{ data.text }}",
                },
                "fr": {
                    "subject": "Nouveau commentaire : {{ title }}",
                    "html": "<p>{{ actor.name }} a écrit {{ data.text }} à {{ user.name }}</p>",
                    "text": "{{ actor.name }} a écrit {{ data.text }}",
                },
            }
        },
    )
    assert r.status_code == 200, r.text
    fr, en, other = address(), address(), address()
    users = [
        {"id": user_id(), "email": fr, "name": "Zoé", "locale": "fr-CA"},
        {"id": user_id(), "email": en, "name": "Ann", "locale": "en-GB"},
        {"id": user_id(), "email": other, "locale": "de"},  # no German: the type's default
    ]
    nid = send(
        mailer,
        users=users,
        type=kind,
        title="Re: <b>plan</b>",
        actor={"name": "Bob & <Co>"},
        data={"text": "<script>alert(1)</script>"},
        escalate=NOW,
    )
    eventually(lambda: all(mailbox.to(a) for a in (fr, en, other)), what="three emails")
    (msg,) = mailbox.to(fr)
    assert msg["Subject"] == "Nouveau commentaire : Re: <b>plan</b>"
    assert msg["Content-Language"] == "fr"
    html = msg.get_body(("html",)).get_content()
    assert "Bob &amp; &lt;Co&gt; a écrit &lt;script&gt;alert(1)&lt;/script&gt; à Zoé" in html
    assert "<script>" not in html
    text_part = msg.get_body(("plain",)).get_content()
    assert "Bob & <Co> a écrit <script>alert(1)</script>" in text_part
    assert nid in msg["Message-ID"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Unsubscribe"].startswith(f"<{mailer.url}/v1/unsubscribe?")
    assert mailbox.to(en)[0]["Subject"] == "New comment: Re: <b>plan</b>"
    assert mailbox.to(other)[0]["Content-Language"] == "en"


def test_without_templates_the_built_in_email(mailer: Server, mailbox: Mailbox) -> None:
    to = address()
    send(
        mailer,
        users=[{"id": user_id(), "email": to}],
        title="Deploy <failed>",
        body="line one\nline two",
        url="/deploys/7",
        actions=[{"id": "retry", "label": "Retry", "url": "https://ci.example.com/retry"}],
        escalate=NOW,
    )
    eventually(lambda: mailbox.to(to), what="the email")
    msg = mailbox.to(to)[0]
    assert msg["Subject"] == "Deploy <failed>"
    html = msg.get_body(("html",)).get_content()
    assert "Deploy &lt;failed&gt;" in html
    assert 'href="https://ci.example.com/retry"' in html
    assert "https://app.example.com/deploys/7" in html  # relative links against the app URL
    assert msg.get_body(("plain",)).get_content().startswith("Deploy <failed>")


def test_a_template_escape_stays_inert(mailer: Server, mailbox: Mailbox) -> None:
    kind = "t-" + user_id()
    for source in (
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
    ):
        r = put_type(mailer, kind, templates={"email": {"en": {"subject": source}}})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == "templates.email.en.subject"
    r = put_type(mailer, kind, templates={"email": {"fr": {"subject": "{{ titel }}"}}})
    assert r.status_code == 422 and "titel" in r.json()["error"]["message"]
    r = put_type(mailer, kind, templates={"email": {"en": {"subject": "{{ title }}"}}})
    assert r.status_code == 200, r.text
    # What a publisher sends is data, never a template: rendered as the text it is.
    to = address()
    send(
        mailer,
        type=kind,
        users=[{"id": user_id(), "email": to}],
        title="{{ ''.__class__ }} {% raw %}",
        escalate=NOW,
    )
    eventually(lambda: mailbox.to(to), what="the email")
    assert mailbox.to(to)[0]["Subject"] == "{{ ''.__class__ }} {% raw %}"


# -- seen, and escalation cancelled by it -----------------------------------------------------


def test_seen_is_counted_and_told_to_other_tabs(mailer: Server) -> None:
    user = user_id()
    a, b = send(mailer, users=[user]), send(mailer, users=[user])
    tab = mailer.connect(user)
    try:
        assert tab.until("unread") == {"type": "unread", "count": 2, "unseen": 2}
        r = httpx.post(
            f"{mailer.url}/v1/me/notifications/seen",
            json={"ids": [a]},
            headers=mailer.me(user),
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"id": None, "change": "seen", "unread": 2, "unseen": 1}
        event = tab.until("state")
        assert (event["change"], event["ids"], event["unseen"]) == ("seen", [a], 1)
        page = httpx.get(f"{mailer.url}/v1/me/notifications", headers=mailer.me(user)).json()
        assert page["unseen"] == 1 and page["unread"] == 2
        assert [i["seen_at"] is not None for i in page["items"]] == [False, True]  # b, a
        r = httpx.post(
            f"{mailer.url}/v1/me/notifications/seen-all", headers=mailer.me(user), timeout=10
        )
        assert r.json()["unseen"] == 0 and r.json()["unread"] == 2
        assert tab.until("state")["change"] == "seen_all"
        counts = httpx.get(f"{mailer.url}/v1/me/unread-count", headers=mailer.me(user)).json()
        assert counts == {"unread": 2, "unseen": 0}
        assert b
    finally:
        tab.close()


def test_no_email_when_seen_or_read_in_time(mailer: Server, mailbox: Mailbox) -> None:
    later = [{"channel": "email", "after": 3600, "unless": "seen"}]
    seen_to, read_to, ignored_to = address(), address(), address()
    users = {a: user_id() for a in (seen_to, read_to, ignored_to)}
    for a, u in users.items():
        profile(mailer, u, email=a)
    ids = {a: send(mailer, users=[u], escalate=later) for a, u in users.items()}
    me = mailer.me(users[seen_to])
    r = httpx.post(
        f"{mailer.url}/v1/me/notifications/seen", json={"ids": [ids[seen_to]]}, headers=me
    )
    assert r.status_code == 200
    r = httpx.post(
        f"{mailer.url}/v1/me/notifications/{ids[read_to]}/read", headers=mailer.me(users[read_to])
    )
    assert r.status_code == 200
    make_due(mailer, list(ids.values()))
    eventually(lambda: mailbox.to(ignored_to), what="the email of the one who did not look")
    eventually(lambda: all(sweep_done(mailer, n) for n in ids.values()), what="the sweep")
    assert mailbox.to(seen_to) == [] and mailbox.to(read_to) == []


def test_each_reply_is_recorded_while_the_batch_is_still_sending(
    mailer: Server, mailbox: Mailbox
) -> None:
    """A crash mid-batch resends only what was in flight, not every message of the batch
    already accepted (they would be if the batch were settled at its end)."""
    users = {user_id(): address() for _ in range(12)}
    batch = [
        {"users": [{"id": u, "email": to}], "title": "t", "escalate": [{"after": 3600}]}
        for u, to in users.items()
    ]
    before = len(mailbox.messages)
    mailbox.hold_after = before + 4
    try:
        r = api(mailer, "POST", "/v1/notifications/batch", json={"notifications": batch})
        assert r.status_code == 200, r.text
        ids = [item["result"]["id"] for item in r.json()["results"]]
        make_due(mailer, ids)  # all at once: one sweep, one claim
        eventually(lambda: len(mailbox.messages) == before + 4, what="four accepted")
        outbox = "SELECT count(*) FROM email_outbox WHERE notification_id IN ({})".format(
            ",".join(f"'{n}'" for n in ids)
        )
        # The four accepted are gone from the outbox while the rest still wait on a reply.
        eventually(lambda: query(mailer, outbox) == [(8,)], timeout=10, what="four settled")
    finally:
        mailbox.hold_after = None
    eventually(lambda: all(sweep_done(mailer, n) for n in ids), what="all settled")
    assert all(len(mailbox.to(to)) == 1 for to in users.values())


def test_a_recall_stops_the_claimed_emails_not_yet_sent(mailer: Server, mailbox: Mailbox) -> None:
    """Eight emails claimed in one batch over four connections; the first four are held at
    the SMTP server's reply. Recalled then, the four not yet sent never go out (the log says
    `recalled`); the four in flight cannot be taken back."""
    users = {user_id(): address() for _ in range(8)}
    batch = [
        {"users": [{"id": u, "email": to}], "title": "oops", "escalate": [{"after": 3600}]}
        for u, to in users.items()
    ]
    before = len(mailbox.messages)
    mailbox.hold_after = before
    try:
        r = api(mailer, "POST", "/v1/notifications/batch", json={"notifications": batch})
        assert r.status_code == 200, r.text
        ids = [item["result"]["id"] for item in r.json()["results"]]
        make_due(mailer, ids)  # all at once: one sweep, one claim
        # Four held in flight: the batch of eight was claimed before they were sent.
        eventually(lambda: mailbox.holding == 4, what="four in flight")
        for nid in ids:
            assert api(mailer, "DELETE", f"/v1/notifications/{nid}").status_code == 200
    finally:
        mailbox.hold_after = None
    eventually(lambda: all(sweep_done(mailer, n) for n in ids), what="all settled")
    sent = len(mailbox.messages) - before
    assert sent == 4, sent

    def email_state(nid: str) -> list[str]:
        log = api(mailer, "GET", f"/v1/notifications/{nid}/deliveries").json()
        return [
            s["state"] for r in log["recipients"] if r["channel"] == "email" for s in r["states"]
        ]

    assert sorted(s for n in ids for s in email_state(n)) == ["emailed"] * 4 + ["recalled"] * 4


def test_unless_read_still_emails_what_was_only_seen(mailer: Server, mailbox: Mailbox) -> None:
    to, user = address(), user_id()
    profile(mailer, user, email=to)
    nid = send(mailer, users=[user], escalate=[{"after": 3600, "unless": "read"}])
    r = httpx.post(
        f"{mailer.url}/v1/me/notifications/seen", json={"ids": [nid]}, headers=mailer.me(user)
    )
    assert r.json()["unseen"] == 0
    make_due(mailer, [nid])
    eventually(lambda: mailbox.to(to), what="the email")


def test_when_offline_skips_users_with_a_live_connection(mailer: Server, mailbox: Mailbox) -> None:
    online, offline = user_id(), user_id()
    on_to, off_to = address(), address()
    profile(mailer, online, email=on_to)
    profile(mailer, offline, email=off_to)
    tab = mailer.connect(online)
    try:
        eventually(
            lambda: query(mailer, "SELECT 1 FROM online WHERE user_id = :u", u=online),
            what="the online heartbeat",
        )
        nid = send(mailer, users=[online, offline], escalate=[{"after": 0, "when": "offline"}])
        eventually(lambda: mailbox.to(off_to), what="the offline user's email")
        eventually(lambda: sweep_done(mailer, nid), what="the sweep")
        assert mailbox.to(on_to) == []
    finally:
        tab.close()


def test_topic_followers_are_escalated_lazily(mailer: Server, mailbox: Mailbox) -> None:
    """A topic notification writes one escalation row; the due sweep finds the followers with
    an address who have not seen it."""
    topic = "t" + user_id()
    fans = {user_id(): address() for _ in range(3)}
    for u, a in fans.items():
        profile(mailer, u, email=a)
    r = api(mailer, "PUT", f"/v1/topics/{topic}/subscribers", json={"users": list(fans)})
    assert r.status_code in (200, 201), r.text
    looker = next(iter(fans))
    nid = send(mailer, topics=[topic], escalate=[{"after": 3600}])
    assert query(mailer, "SELECT count(*) FROM escalations WHERE notification_id = :n", n=nid) == [
        (1,)
    ]
    httpx.post(
        f"{mailer.url}/v1/me/notifications/seen", json={"ids": [nid]}, headers=mailer.me(looker)
    )
    make_due(mailer, [nid])
    others = [a for u, a in fans.items() if u != looker]
    eventually(lambda: all(mailbox.to(a) for a in others), what="the followers' emails")
    eventually(lambda: sweep_done(mailer, nid), what="the sweep")
    assert mailbox.to(fans[looker]) == []


# -- preferences, unsubscribe ---------------------------------------------------------------


def test_one_click_unsubscribe_is_signed_and_turns_email_off(
    mailer: Server, mailbox: Mailbox
) -> None:
    kind, user, to = "news-" + user_id(), user_id(), address()
    profile(mailer, user, email=to)
    send(mailer, users=[user], type=kind, escalate=NOW)
    eventually(lambda: mailbox.to(to), what="the first email")
    link = re.fullmatch(r"<(.+)>", mailbox.to(to)[0]["List-Unsubscribe"]).group(1)  # type: ignore[union-attr]
    query_ = parse_qs(urlsplit(link).query)
    forged = link.replace(f"t={query_['t'][0]}", "t=other")
    assert httpx.post(forged, data={"List-Unsubscribe": "One-Click"}).status_code == 403
    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    assert httpx.post(tampered, data={"List-Unsubscribe": "One-Click"}).status_code == 403
    page = httpx.get(link)
    assert page.status_code == 200 and "<form method=post>" in page.text  # GET changes nothing
    r = httpx.post(link, data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200, r.text
    prefs = httpx.get(f"{mailer.url}/v1/me/preferences", headers=mailer.me(user)).json()
    assert prefs["types"][kind]["email"] is False and prefs["types"][kind]["in_app"] is True
    nid = send(mailer, users=[user], type=kind, escalate=NOW)
    eventually(lambda: sweep_done(mailer, nid), what="the sweep")
    assert len(mailbox.to(to)) == 1


# -- retries and bad addresses --------------------------------------------------------------


def test_a_451_is_retried_and_a_550_marks_the_address_bad(mailer: Server, mailbox: Mailbox) -> None:
    retried, refused, busy = address(), address(), address()
    mailbox.script[retried] = ["451 4.7.1 try again later"]
    mailbox.script[refused] = ["550 5.1.1 no such mailbox"]
    mailbox.script[busy] = ["451 4.3.2 busy"] * 5  # more than the 3 attempts allowed
    users = {a: user_id() for a in (retried, refused, busy)}
    ids = [send(mailer, users=[{"id": u, "email": a}], escalate=NOW) for a, u in users.items()]
    eventually(lambda: mailbox.to(retried), what="the retried email")
    eventually(lambda: all(sweep_done(mailer, n) for n in ids), what="every email settled")
    assert mailbox.to(refused) == [] and mailbox.to(busy) == []
    assert [a for a, _ in mailbox.refused].count(busy) == 3  # attempts, then given up
    assert [a for a, _ in mailbox.refused].count(refused) == 1  # never tried again
    assert api(mailer, "GET", f"/v1/users/{users[refused]}").json()["email_status"] == "bad"
    assert api(mailer, "GET", f"/v1/users/{users[busy]}").json()["email_status"] is None
    # A bad address gets nothing more until the app gives a new one.
    nid = send(mailer, users=[users[refused]], escalate=NOW)
    eventually(lambda: sweep_done(mailer, nid), what="the sweep")
    assert [a for a, _ in mailbox.refused].count(refused) == 1
    profile(mailer, users[refused], email=refused)  # the same address, given again: still bad
    assert api(mailer, "GET", f"/v1/users/{users[refused]}").json()["email_status"] == "bad"
    metrics = httpx.get(f"{mailer.url}/metrics").text
    assert re.search(r"^clarion_email_bad_total [1-9]", metrics, re.M), metrics
    assert re.search(r"^clarion_email_failed_total [1-9]", metrics, re.M)
    fixed = address()
    assert profile(mailer, users[refused], email=fixed)["email_status"] is None
    send(mailer, users=[users[refused]], escalate=NOW)
    eventually(lambda: mailbox.to(fixed), what="the email to the new address")


def test_the_delivery_log_and_webhooks_say_what_email_did(mailer: Server, mailbox: Mailbox) -> None:
    """`emailed`, or `failed` with the SMTP server's reason, in the log; `delivery.failed`
    and `email.bounced` to a webhook, signed, from the transaction that settled the reply."""
    receiver = Receiver(fail_first=0)
    name = "mail" + user_id()[2:]
    hook = {"url": receiver.url, "events": ["delivery.failed", "email.bounced"]}
    admin = {"Authorization": f"Bearer {admin_key(mailer)}"}
    r = httpx.put(f"{mailer.url}/v1/webhooks/{name}", json=hook, headers=admin)
    assert r.status_code == 200, r.text
    receiver.secret = r.json()["secret"]
    try:
        ok, refused, busy = address(), address(), address()
        mailbox.script[refused] = ["550 5.1.1 no such mailbox"]
        mailbox.script[busy] = ["451 4.3.2 busy"] * 5  # more than the 3 attempts allowed
        users = {a: user_id() for a in (ok, refused, busy)}
        ids = {
            a: send(mailer, users=[{"id": u, "email": a}], escalate=NOW) for a, u in users.items()
        }
        eventually(lambda: all(sweep_done(mailer, n) for n in ids.values()), what="all settled")

        def email_states(to: str) -> dict[str, Any]:
            log = api(mailer, "GET", f"/v1/notifications/{ids[to]}/deliveries").json()
            for r in log["recipients"]:
                if r["user"] == users[to] and r["channel"] == "email":
                    return {s["state"]: s for s in r["states"]}
            return {}

        assert set(email_states(ok)) == {"emailed"}
        assert email_states(refused)["failed"]["detail"] == "SMTP 550 5.1.1 no such mailbox"
        assert "after 3 attempts" in email_states(busy)["failed"]["detail"]
        eventually(
            lambda: (
                receiver.events(users[refused]) == ["delivery.failed", "email.bounced"]
                and receiver.events(users[busy]) == ["delivery.failed"]
            ),
            what="the webhook events",
        )
        assert receiver.events(users[ok]) == [] and receiver.bad_signatures == 0
        with receiver.lock:
            bounced = [b for _, b in receiver.received if b["type"] == "email.bounced"]
        assert bounced[0]["data"]["code"] == 550 and bounced[0]["data"]["id"] == ids[refused]
    finally:
        httpx.delete(f"{mailer.url}/v1/webhooks/{name}", headers=admin)
        receiver.close()


# -- erasure --------------------------------------------------------------------------------

USER_TABLES = (
    "profiles",
    "marks",
    "watermarks",
    "follows",
    "preferences",
    "user_settings",
    "throttles",
    "digest_items",
    "push_subscriptions",
    "push_outbox",
    "email_outbox",
    "online",
    "tickets",
)


def held(server: Server, user: str, only: list[str]) -> dict[str, int]:
    """Rows that name the user or hold its personal notifications, per table."""
    out = {
        t: query(server, f"SELECT count(*) FROM {t} WHERE user_id = :u", u=user)[0][0]
        for t in USER_TABLES
    }
    stream = f"user:{user}"
    for table, column in (("routes", "stream"), ("events", "stream"), ("streams", "name")):
        out[table] = query(server, f"SELECT count(*) FROM {table} WHERE {column} = :s", s=stream)[
            0
        ][0]
    for table, column in (
        ("notifications", "id"),
        ("escalations", "notification_id"),
        ("idempotency", "notification_id"),
    ):
        out[table] = sum(
            query(server, f"SELECT count(*) FROM {table} WHERE {column} = :n", n=n)[0][0]
            for n in only
        )
    return out


def test_erasure_leaves_nothing_behind(mailer: Server, mailbox: Mailbox) -> None:
    user, other = user_id(), user_id()
    profile(mailer, user, email=address(), name="Erin", data={"plan": "pro"})
    mine = [
        send(mailer, users=[user], escalate=[{"after": 3600}], idempotency_key=user_id()),
        send(mailer, users=[user], title="second"),
    ]
    both = send(mailer, users=[user, other])
    topic = "t" + user_id()
    api(mailer, "PUT", f"/v1/topics/{topic}/subscribers", json={"users": [user]})
    shared = send(mailer, topics=[topic])
    me = mailer.me(user)
    httpx.post(f"{mailer.url}/v1/me/notifications/{mine[1]}/read", headers=me)
    httpx.post(f"{mailer.url}/v1/me/notifications/seen", json={"ids": [shared]}, headers=me)
    httpx.post(f"{mailer.url}/v1/me/notifications/read-all", headers=me)
    httpx.put(
        f"{mailer.url}/v1/me/preferences",
        json={"types": {"x": {"email": False}}, "timezone": "Europe/Paris"},
        headers=me,
    )
    tab = mailer.connect(user)
    eventually(
        lambda: query(mailer, "SELECT 1 FROM online WHERE user_id = :u", u=user), what="online"
    )
    before = held(mailer, user, mine)
    assert all(
        before[t]
        for t in (
            "profiles",
            "marks",
            "watermarks",
            "follows",
            "preferences",
            "user_settings",
            "online",
            "routes",
            "events",
            "streams",
            "notifications",
            "escalations",
            "idempotency",
        )
    ), before
    # The tab goes first, and its node records that (presence, last seen: docs/control.md), so
    # nothing of the user is written after the erasure.
    tab.close()
    eventually(
        lambda: (
            query(mailer, "SELECT 1 FROM last_seen WHERE user_id = :u", u=user)
            and not query(mailer, "SELECT 1 FROM presence WHERE user_id = :u", u=user)
        ),
        what="the closed tab recorded",
    )
    r = api(mailer, "DELETE", f"/v1/users/{user}")
    assert r.status_code == 200, r.text
    erased = r.json()["erased"]
    assert erased["notifications"] == 2 and erased["profiles"] == 1 and erased["last_seen"] == 1
    after = held(mailer, user, mine)
    assert after == dict.fromkeys(after, 0), after
    # What others were sent stays theirs.
    assert query(
        mailer, "SELECT count(*) FROM notifications WHERE id IN (:a, :b)", a=both, b=shared
    ) == [(2,)]
    page = httpx.get(f"{mailer.url}/v1/me/notifications", headers=mailer.me(other)).json()
    assert [i["id"] for i in page["items"]] == [both]
    assert api(mailer, "GET", f"/v1/users/{user}").status_code == 404
    assert api(mailer, "DELETE", f"/v1/users/{user}").json()["erased"] == {}


def test_the_sdk_and_the_cli_manage_profiles(mailer: Server) -> None:
    from clarion.client import ClarionError, Publisher

    user = user_id()

    async def sdk() -> None:
        async with Publisher(mailer.url, mailer.api_key) as clarion:
            got = await clarion.put_user(user, email="sdk@example.com", locale="fr")
            assert got["email"] == "sdk@example.com"
            assert (await clarion.get_user(user))["locale"] == "fr"
            with pytest.raises(ClarionError) as bad:
                await clarion.put_user(user, email="nope")
            assert bad.value.field == "email"

    asyncio.run(sdk())
    flags = ("--server", mailer.url, "--api-key", mailer.api_key)
    out = mailer.cli("users", "put", user, "--email", "cli@example.com", "--name", "Cy", *flags)
    assert json.loads(out)["name"] == "Cy"
    assert json.loads(mailer.cli("users", "get", user, *flags))["email"] == "cli@example.com"
    assert json.loads(mailer.cli("users", "delete", user, *flags)) == {"profiles": 1}
    assert api(mailer, "GET", f"/v1/users/{user}").status_code == 404
