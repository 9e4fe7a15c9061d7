"""The shared look: header, state badges, clock colours, human dates, safe text.

User text (names, notes, reasons, facility names) is never rendered as HTML and is
escaped before it goes into Markdown, so a note cannot inject a link or an image.
"""

from __future__ import annotations

import re
from datetime import date, datetime

import streamlit as st

from core.actor import Actor
from core.config import get_settings  # noqa: F401 - pages use ui.get_settings
from core.timeutil import as_utc
from core.vocab import FUNNEL, CaseState

STATE_COLOURS: dict[str, str] = {
    "assessed": "gray",
    "referral": "blue",
    "records_requested": "violet",
    "records_received": "orange",
    "scheduled": "blue",
    "seen": "green",
    "closed": "gray",
}
# Clock / flag levels -> badge colour. One ladder for SLA, patient clock and flags.
LEVEL_COLOURS: dict[str, str] = {
    "ok": "green",
    "due_soon": "yellow",
    "amber": "orange",
    "stalled": "red",
    "red": "red",
    "escalated": "violet",
    "critical": "violet",
    "paused": "gray",
    "stopped": "gray",
}
LEVEL_ICONS: dict[str, str] = {
    "ok": ":material/check_circle:",
    "due_soon": ":material/schedule:",
    "amber": ":material/schedule:",
    "stalled": ":material/warning:",
    "red": ":material/warning:",
    "escalated": ":material/priority_high:",
    "critical": ":material/priority_high:",
    "paused": ":material/pause_circle:",
    "stopped": ":material/stop_circle:",
}

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:])")


def safe(text: object) -> str:
    """Escape Markdown so user text shows literally (no links, images, HTML)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text if text is not None else ""))


def label(value: str | None) -> str:
    return (value or "").replace("_", " ")


def state_label(state: str) -> str:
    return CaseState(state).label


def state_badge(state: str) -> None:
    st.badge(state_label(state), color=STATE_COLOURS.get(state, "gray"))


def level_badge(text: str, level: str) -> None:
    st.badge(text, color=LEVEL_COLOURS.get(level, "gray"), icon=LEVEL_ICONS.get(level))


def local(dt: datetime) -> datetime:
    return as_utc(dt).astimezone(get_settings().tz)


def exact(dt: datetime | None) -> str:
    if dt is None:
        return ""
    return local(dt).strftime("%a %d %b %Y, %H:%M %Z")


def human(dt: datetime | date | None, now: datetime) -> str:
    """'3 days ago', 'in 2 hours', 'today' - relative to the page's `now`."""
    if dt is None:
        return "-"
    if not isinstance(dt, datetime):
        days = (dt - local(now).date()).days
        if days == 0:
            return "today"
        if days == 1:
            return "tomorrow"
        if days == -1:
            return "yesterday"
        return f"in {days} days" if days > 0 else f"{-days} days ago"
    seconds = (as_utc(dt) - as_utc(now)).total_seconds()
    future = seconds > 0
    s = abs(seconds)
    if s < 60:
        return "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size:
            n = int(s // size)
            text = f"{n} {unit}{'s' if n != 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "just now"  # pragma: no cover


def when(dt: datetime | None, now: datetime, *, prefix: str = "") -> None:
    """A human date with the exact local time on hover."""
    st.markdown(f"{safe(prefix)}{human(dt, now)}", help=exact(dt) or None)


def header(title: str, actor: Actor, *, subtitle: str | None = None) -> None:
    # No heading anchor: its link would carry the title (a patient's name) into the URL.
    # User text in `title` must come escaped (`safe`).
    st.title(title, anchor=False)
    if subtitle:
        st.caption(safe(subtitle))


def stepper(state: str) -> None:
    """The six funnel states in a row, the current one highlighted; closed shown apart."""
    cols = st.columns(len(FUNNEL))
    reached = True
    current = CaseState(state)
    for col, step in zip(cols, FUNNEL, strict=True):
        with col:
            if step is current:
                st.badge(step.label, color="blue", icon=":material/radio_button_checked:")
                reached = False
            elif reached and current is not CaseState.CLOSED:
                st.badge(step.label, color="green", icon=":material/check:")
            else:
                st.badge(step.label, color="gray")
    if current is CaseState.CLOSED:
        st.badge("Closed", color="gray", icon=":material/block:")


def show_error(exc: Exception) -> None:
    """Domain errors carry messages written for coordinators; show them as they are."""
    st.error(safe(exc), icon=":material/error:")


def open_case(case_id: int) -> None:
    """Go to the case page for `case_id` (the id also goes into the URL, so the page can
    be bookmarked and reloaded)."""
    st.session_state["case_id"] = int(case_id)
    st.switch_page("pages/case.py", query_params={"case": str(int(case_id))})
