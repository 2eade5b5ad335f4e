"""Templates per type, channel and locale: Jinja2 in its sandbox, checked when they are stored.

A type may carry `templates: {"email": {"en": {"subject", "html", "text"}, "fr": ...},
"in_app": {"en": {"title", "body"}}}`. They are rendered from the notification (`title`,
`body`, `url`, `actions`, `data`, `actor`, ...) and the recipient's profile (`user`). The
sandbox refuses attribute access to internals (`''.__class__` renders as nothing, going further
is an error), HTML parts are autoescaped, and every template is rendered against sample data
when it is stored, so an error is a 422 at `PUT /v1/types/{type}`, not a failed send later.
The recipient's locale picks the variant: `fr-CA`, then `fr`, then the type's default, then
Clarion's built-in email.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

PARTS = {"email": ("subject", "html", "text"), "in_app": ("title", "body")}
MAX_SOURCE = 20_000  # characters per template
MAX_OUTPUT = 200_000  # characters a rendering may produce

# HTML parts escape what they insert; subjects and text are plain (a mail client shows them
# as text), so they are not escaped but stripped of line breaks where a header needs one line.
# Checking is strict (a misspelt name is an error at PUT); sending is lenient (a `data` key one
# notification lacks renders as nothing).
_ENVS = {
    (html, strict): SandboxedEnvironment(
        autoescape=html, undefined=StrictUndefined if strict else ChainableUndefined
    )
    for html in (True, False)
    for strict in (True, False)
}

SAMPLE: dict[str, Any] = {
    "id": "01SAMPLE0000000000000000000",
    "type": "sample",
    "priority": "normal",
    "title": "Sample title",
    "body": "Sample body",
    "icon": None,
    "url": "https://example.com/",
    "actions": [{"id": "open", "label": "Open", "url": "https://example.com/"}],
    "data": {},
    "actor": {"id": "sample", "name": "Sample actor", "avatar": None},
    "created_at": "2026-01-01T00:00:00.000Z",
    "user": {"id": "sample", "name": "Sample user", "email": "user@example.com", "locale": "en"},
}


class TemplateInvalid(ValueError):
    """A template that cannot render: `field` names it (templates.email.fr.subject)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@lru_cache(maxsize=512)
def _compiled(html: bool, strict: bool, source: str) -> Template:
    """Compiling costs far more than rendering: each source is compiled once."""
    return _ENVS[(html, strict)].from_string(source)


def check(templates: Mapping[str, Mapping[str, Mapping[str, str]]]) -> None:
    """Raise `TemplateInvalid` for the first template that does not compile or render against
    sample data (with any `data` keys tolerated: undefined values are errors only at the top)."""
    for channel, locales in templates.items():
        parts = PARTS.get(channel)
        if parts is None:
            raise TemplateInvalid(f"templates.{channel}", f"no channel {channel!r}")
        for locale, variant in locales.items():
            where = f"templates.{channel}.{locale}"
            missing = [p for p in parts if not variant.get(p)]
            unknown = [p for p in variant if p not in parts]
            if unknown:
                raise TemplateInvalid(f"{where}.{unknown[0]}", f"{channel} has {list(parts)}")
            if missing and (channel != "email" or "subject" in missing):
                raise TemplateInvalid(f"{where}.{missing[0]}", "missing")
            for part, source in variant.items():
                if len(source) > MAX_SOURCE:
                    raise TemplateInvalid(f"{where}.{part}", f"over {MAX_SOURCE} characters")
                try:
                    render_part(part, source, SAMPLE, sample=True)
                except TemplateError as exc:
                    raise TemplateInvalid(f"{where}.{part}", f"template error: {exc}") from None


class _Lenient(dict[str, Any]):
    """Sample `data`: any key is there (a template may use keys only real data has)."""

    def __missing__(self, key: str) -> _Lenient:
        return _Lenient()


def render_part(part: str, source: str, context: Mapping[str, Any], sample: bool = False) -> str:
    ctx = dict(context)
    if sample:
        ctx["data"] = _Lenient(ctx.get("data") or {})
    text = _compiled(part == "html", sample, source).render(ctx)
    if len(text) > MAX_OUTPUT:
        raise TemplateError(f"renders over {MAX_OUTPUT} characters")
    if part in ("subject", "title"):
        text = " ".join(text.split())
    return text


def pick(
    locales: Mapping[str, Mapping[str, str]], locale: str | None, default: str
) -> tuple[str, Mapping[str, str]] | None:
    """The variant for `locale`: exact, then each shorter prefix (`fr-CA` -> `fr`), then the
    type's default locale; None: no variant (the built-in one is used)."""
    lower = {k.lower(): k for k in locales}
    tag = (locale or "").lower()
    while tag:
        if tag in lower:
            return lower[tag], locales[lower[tag]]
        tag = tag.rpartition("-")[0]
    if default.lower() in lower:
        key = lower[default.lower()]
        return key, locales[key]
    return None


def render(
    templates: Mapping[str, Mapping[str, Mapping[str, str]]],
    channel: str,
    locale: str | None,
    default: str,
    context: Mapping[str, Any],
) -> tuple[str, dict[str, str]] | None:
    """(locale used, rendered parts) of the channel's variant for `locale`, or None."""
    found = pick(templates.get(channel, {}), locale, default)
    if found is None:
        return None
    used, variant = found
    return used, {part: render_part(part, src, context) for part, src in variant.items()}
