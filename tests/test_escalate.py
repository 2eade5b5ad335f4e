"""Escalation and template decisions, pure: a fixed `now`, no server, no store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clarion import templates
from clarion.domain import Draft, Escalation, TypeSettings, UserPreferences
from clarion.planner.escalate import Candidate, EscalationRow, escalations, recipients

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def draft(escalate: tuple[Escalation, ...] | None = None, type: str = "message") -> Draft:
    return Draft("01N", type, "normal", b"{}", NOW, users=["ann"], escalate=escalate)


def row(unless: str = "seen", offline: bool = False) -> EscalationRow:
    return EscalationRow(
        notification_id="01N",
        rule=0,
        channel="email",
        unless=unless,
        offline=offline,
        due_at=NOW,
        created_at=NOW - timedelta(minutes=15),
    )


def who(user: str = "ann", **kw: object) -> Candidate:
    fields: dict[str, object] = {
        "email": f"{user}@example.com",
        "bad": False,
        "seen": False,
        "read": False,
        "choice": None,
        "prefs": UserPreferences(),
    }
    fields.update(kw)
    return Candidate(user, **fields)  # type: ignore[arg-type]


def test_rows_come_from_the_draft_else_the_type() -> None:
    types = {"message": TypeSettings("message", escalate=(Escalation(after=600),))}
    (r,) = escalations([draft()], types)
    assert r["due_at"] == NOW + timedelta(seconds=600) and r["unless"] == "seen"
    own = (Escalation(after=0, unless="read"), Escalation(after=60, offline=True))
    rows = escalations([draft(own)], types)
    assert [(r["rule"], r["due_at"], r["offline"]) for r in rows] == [
        (0, NOW, False),
        (1, NOW + timedelta(seconds=60), True),
    ]
    assert escalations([draft(())], types) == []  # the draft says none
    assert escalations([draft(type="other")], types) == []


@pytest.mark.parametrize(
    ("candidate", "unless", "emailed"),
    [
        (who(), "seen", True),
        (who(seen=True), "seen", False),
        (who(seen=True), "read", True),
        (who(seen=True, read=True), "read", False),
        (who(email=None), "seen", False),
        (who(bad=True), "seen", False),
        (who(choice=False), "seen", False),
    ],
)
def test_who_is_emailed(candidate: Candidate, unless: str, emailed: bool) -> None:
    got = recipients(row(unless), "message", "normal", [candidate], {}, NOW, 5.0)
    assert bool(got) is emailed


def test_the_types_default_and_mandatory() -> None:
    off = {"message": TypeSettings("message", email=False)}
    assert recipients(row(), "message", "normal", [who()], off, NOW, 5.0) == []
    assert recipients(row(), "message", "normal", [who(choice=True)], off, NOW, 5.0)
    forced = {"message": TypeSettings("message", mandatory=True)}
    assert recipients(row(), "message", "normal", [who(choice=False)], forced, NOW, 5.0)


def test_a_user_is_judged_once_by_its_first_copy() -> None:
    got = recipients(row(), "m", "normal", [who(seen=True), who(), who("bob")], {}, NOW, 5.0)
    assert [r["user_id"] for r in got] == ["bob"]


def test_offline_means_no_live_connection_at_publish_time() -> None:
    published = NOW - timedelta(minutes=15)
    hour = timedelta(hours=1)
    online = who(online=((published - hour, NOW),))
    came_later = who("bob", online=((published + timedelta(seconds=1), NOW),))
    left_before = who("cy", online=((published - hour, published - timedelta(60)),))
    beat_due = who(  # its node's last beat is at most a few heartbeats old at the publish
        "di", online=((published - hour, published - timedelta(0, 4)),)
    )
    # on two nodes: left one before the publish, on the other from before it
    moved = who("ed", online=((published - hour, published - hour / 2), (published - hour, NOW)))
    got = recipients(
        row(offline=True),
        "m",
        "normal",
        [online, came_later, left_before, beat_due, moved],
        {},
        NOW,
        5,
    )
    assert sorted(r["user_id"] for r in got) == ["bob", "cy"]


def test_quiet_hours_hold_email_except_critical() -> None:
    quiet = who(prefs=UserPreferences("Europe/Paris", "13:00", "15:00"))  # 14:00 in Paris
    (held,) = recipients(row(), "m", "normal", [quiet], {}, NOW, 5.0)
    assert held["due_at"] == datetime(2026, 6, 1, 13, 0, tzinfo=UTC)
    (now,) = recipients(row(), "m", "critical", [quiet], {}, NOW, 5.0)
    assert now["due_at"] == NOW


def test_locale_fallback() -> None:
    variants = {"fr": {"subject": "fr"}, "en": {"subject": "en"}, "pt-BR": {"subject": "br"}}
    assert templates.pick(variants, "fr-CA", "en") == ("fr", {"subject": "fr"})
    assert templates.pick(variants, "pt-br", "en") == ("pt-BR", {"subject": "br"})
    assert templates.pick(variants, "de", "en") == ("en", {"subject": "en"})
    assert templates.pick(variants, None, "en") == ("en", {"subject": "en"})
    assert templates.pick({"fr": {}}, "de", "en") is None  # the built-in email


def test_templates_are_checked_and_sandboxed() -> None:
    with pytest.raises(templates.TemplateInvalid) as bad:
        templates.check({"email": {"en": {"subject": "{{ ''.__class__ }}"}}})
    assert bad.value.field == "templates.email.en.subject"
    with pytest.raises(templates.TemplateInvalid) as missing:
        templates.check({"email": {"en": {"html": "<p>x</p>"}}})
    assert missing.value.field == "templates.email.en.subject"
    with pytest.raises(templates.TemplateInvalid):
        templates.check({"sms": {"en": {"text": "x"}}})
    templates.check({"in_app": {"en": {"title": "{{ data.a.b }}", "body": "{{ actor.name }}"}}})
    used, parts = templates.render(
        {"email": {"en": {"subject": "{{ title }}\n!", "html": "{{ title }}"}}},
        "email",
        "en-US",
        "en",
        {"title": "<b>"},
    ) or ("", {})
    assert (used, parts) == ("en", {"subject": "<b> !", "html": "&lt;b&gt;"})


def test_in_app_templates_render_in_the_types_locale() -> None:
    import orjson

    from clarion.events import notification_doc
    from clarion.planner.escalate import templated

    doc = notification_doc(
        "01N", None, type="comment", priority="normal", title="x", actor={"name": "Bo"}
    )
    d = Draft("01N", "comment", "normal", doc, NOW)
    rule = TypeSettings(
        "comment",
        locale="fr",
        templates={
            "in_app": {
                "en": {"title": "{{ actor.name }} commented", "body": "{{ body }}"},
                "fr": {"title": "{{ actor.name }} a commenté", "body": "<b>{{ title }}</b>"},
            }
        },
    )
    out = orjson.loads(templated(d, {"comment": rule}).doc)
    assert (out["title"], out["body"]) == ("Bo a commenté", "<b>x</b>")  # text: not escaped
    assert templated(d, {}) is d
