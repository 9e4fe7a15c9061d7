"""The one write path for a case's state (DESIGN.md section 2).

`move_case` is the only code that changes `Case.state` after a case is created, and
`open_case` the only code that creates one. In order, inside the caller's transaction:

1. load the case as the database has it now; refuse someone outside its team;
2. refuse a page's stale copy (`expected_version`);
3. look the move up in the table (`states.TRANSITIONS`): TransitionNotAllowed otherwise;
4. run the move's named guards: GuardFailed listing every unmet condition;
5. check the permission (MOVE_CASE, or REOPEN) for the case's team;
6. compare-and-set UPDATE on the version (StaleCaseError on 0 rows), raising
   `furthest_rank` to the funnel rank of the state entered in the same statement;
7. append the history row with the time spent in the state left, the new version and
   the case's team;
8. restart the state clock (`state_entered_at`, `paused_seconds`) and store the new SLA
   deadlines (the limits are read with the case, step 1); 9. write the audit row.

All of it inside a savepoint, so a refusal at any step leaves nothing behind. Reads and
writes are Core statements (core.workflows.write): one move is five statements and no ORM
unit of work, which is what lets a 2-core machine sustain hundreds of moves a second.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from core import audit
from core.actor import Actor
from core.config import get_settings
from core.errors import GuardFailed, NotFoundError, ValidationError
from core.models import REASON_MAX, Case, Specialist
from core.permissions import Action, can
from core.timeutil import as_utc, days_between
from core.validation import case_number, clean_text
from core.vocab import (
    FUNNEL_RANK,
    AppointmentMode,
    CaseState,
    CloseReason,
    RecordStatus,
)
from core.workflows import records
from core.workflows.guards import GuardContext, run_guards
from core.workflows.states import (
    TRANSITIONS,
    Move,
    allowed_moves,
    target_state,
    transition_for,
)
from core.workflows.write import (
    add_event,
    atomic,
    check_version,
    compare_and_set,
    deadline_fields,
    load_case,
    load_case_and_limits,
    require_case_right,
    require_team_access,
    savepoint,
    utc,
)

# Inputs each move accepts besides `reason`; anything else is a caller's mistake.
MOVE_PARAMS: dict[Move, frozenset[str]] = {
    Move.SCHEDULE: frozenset({"appointment_at", "specialist_id", "appointment_mode"}),
    Move.CLOSE: frozenset({"close_reason", "close_note"}),
    # The checklist items found missing: each goes back to requested in the same
    # transaction, so the case cannot be marked complete again until they arrive.
    Move.RECORD_MISSING: frozenset({"missing_items"}),
}


def _coerce_move(move: Move | str) -> Move:
    try:
        return Move(move)
    except ValueError:
        known = ", ".join(m.value for m in Move)
        raise ValidationError(f"Unknown move {move!r}; known moves: {known}.") from None


def parse_datetime(value: Any, *, field: str) -> datetime:
    """An aware UTC datetime from a datetime or ISO text. A time without a zone is read in
    the service's time zone (settings.timezone): that is what a coordinator typing
    '2026-12-01 10:30' into a form means."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValidationError(
                f"{field}: {value!r} is not a valid date and time (YYYY-MM-DD HH:MM)."
            ) from None
    if not isinstance(value, datetime):
        raise ValidationError(f"{field} must be a date and time.")
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(get_settings().timezone))
    return as_utc(value)


def _clean_params(
    session: Session, case: Case, move: Move, reason: str | None, params: dict[str, Any]
) -> dict[str, Any]:
    unknown = set(params) - MOVE_PARAMS.get(move, frozenset())
    if unknown:
        raise ValidationError(
            f"'{move.label}' does not take {', '.join(sorted(unknown))}."
        )
    cleaned: dict[str, Any] = {
        "reason": clean_text(reason, field="Reason", max_length=REASON_MAX)
    }
    if move is Move.SCHEDULE:
        at = params.get("appointment_at")
        cleaned["appointment_at"] = (
            parse_datetime(at, field="Appointment") if at is not None else None
        )
        spec_id = params.get("specialist_id")
        if spec_id is not None:
            spec = session.get(Specialist, spec_id) if isinstance(spec_id, int) else None
            if spec is None or not spec.is_active:
                raise ValidationError(f"There is no active specialist {spec_id!r}.")
        cleaned["specialist_id"] = spec_id
        mode = params.get("appointment_mode")
        if mode is None:
            mode = (AppointmentMode.TELEHEALTH if case.telehealth_preferred
                    else AppointmentMode.IN_PERSON)
        try:
            cleaned["appointment_mode"] = AppointmentMode(mode)
        except ValueError:
            raise ValidationError(
                f"Appointment mode {mode!r} is not one of: in person, telehealth."
            ) from None
    if move is Move.RECORD_MISSING:
        cleaned["missing_items"] = _missing_items(session, case, params.get("missing_items"))
    if move is Move.CLOSE:
        code = params.get("close_reason")
        if code is not None:
            try:
                code = CloseReason(code)
            except ValueError:
                options = ", ".join(r.value.replace("_", " ") for r in CloseReason)
                raise ValidationError(
                    f"{code!r} is not a reason for closing; choose one of: {options}."
                ) from None
        cleaned["close_reason"] = code
        cleaned["close_note"] = (
            clean_text(params.get("close_note"), field="Close note", max_length=REASON_MAX)
            or cleaned["reason"]
        )
    return cleaned


def _missing_items(session: Session, case: Case, ids: Any) -> tuple[int, ...]:
    """The ids of this case's checklist items named missing: each must be on this case
    and received or waived (an item still needed or requested is already outstanding)."""
    if ids is None:
        return ()
    if not isinstance(ids, (list, tuple, set, frozenset)) or not all(
            case_number(i) == i for i in ids):  # ints within a database id, no bools
        raise ValidationError("Missing records must be given as checklist item ids.")
    wanted = tuple(dict.fromkeys(ids))
    if not wanted:
        return ()
    found = records.item_statuses(session, case_id=case.id, item_ids=wanted)
    unknown = [i for i in wanted if i not in found]
    if unknown:
        raise NotFoundError(f"Case {case.id} has no record item {unknown[0]}.")
    outstanding = [i for i in wanted
                   if found[i] not in (RecordStatus.RECEIVED, RecordStatus.WAIVED)]
    if outstanding:
        raise ValidationError(f"Record item {outstanding[0]} is {found[outstanding[0]]}: "
                              "it is still outstanding, not missing.")
    return wanted


def _move_changes(move: Move, case: Case, p: dict[str, Any]) -> dict[str, Any]:
    """The fields a move sets besides the state and its clocks."""
    if move is Move.SCHEDULE:
        changes = {"appointment_at": p["appointment_at"],
                   "appointment_mode": p["appointment_mode"].value}
        if p["specialist_id"] is not None:
            changes["specialist_id"] = p["specialist_id"]
        return changes
    if move is Move.NO_SHOW:
        # The missed appointment stays in the history row; the case needs a new one.
        return {"no_show_count": case.no_show_count + 1, "appointment_at": None,
                "appointment_mode": None}
    if move is Move.CLOSE:
        return {"close_reason": p["close_reason"].value, "close_note": p["close_note"],
                "closed_from_state": case.state}
    if move is Move.REOPEN:
        return {"close_reason": None, "close_note": None, "closed_from_state": None}
    return {}


def _event_reason(move: Move, p: dict[str, Any]) -> str | None:
    if move is Move.CLOSE:
        text = p["close_reason"].value + (f": {p['close_note']}" if p["close_note"] else "")
        return text[:REASON_MAX]
    return p["reason"]


def unmet_conditions(
    session: Session, *, case: Case, move: Move | str, now: datetime,
    params: dict[str, Any] | None = None,
) -> list[str]:
    """Every unmet condition of `move` for `case` ([] = it can be done). With `params`
    None only the case's own conditions are checked (see guards module)."""
    move = _coerce_move(move)
    now = utc(now, field="now")
    t = TRANSITIONS[move]
    if CaseState(case.state) not in t.sources:
        allowed = ", ".join(m.label.lower() for m in allowed_moves(case.state)) or "none"
        return [f"not possible from {CaseState(case.state).label.lower()} "
                f"(allowed: {allowed})"]
    if params is not None:
        params = dict(params)
        reason = params.pop("reason", None)
        params = _clean_params(session, case, move, reason, params)
    return run_guards(t.guards, GuardContext(session, case, now, params))


def _permission_message(actor: Actor, action: Action, case: Case) -> str | None:
    if actor.is_system or can(actor, action, case.team_id):
        return None
    if action is Action.REOPEN:
        return "only a manager or an admin may reopen a case"
    return f"your role ({actor.role.value}) may not change this case"


def available_moves(
    session: Session, *, case: Case, actor: Actor, now: datetime
) -> dict[Move, list[str]]:
    """Every move the table allows from the case's state, with what stands in its way
    ([] = the button can be enabled). Role restrictions appear as a condition."""
    result: dict[Move, list[str]] = {}
    for move in allowed_moves(case.state):
        unmet = unmet_conditions(session, case=case, move=move, now=now)
        message = _permission_message(actor, TRANSITIONS[move].permission, case)
        if message:
            unmet.append(message)
        result[move] = unmet
    return result


def move_case(
    session: Session,
    *,
    case_id: int,
    move: Move | str,
    actor: Actor,
    now: datetime,
    expected_version: int | None = None,
    reason: str | None = None,
    **params: Any,
) -> Case:
    """Move a case along the table. Returns the updated case or raises a typed error;
    on any error nothing is written."""
    move = _coerce_move(move)
    now = utc(now, field="now")
    with savepoint(session):
        case, limits = load_case_and_limits(session, case_id)
        require_team_access(actor, case)
        check_version(session, case, expected_version)
        t = transition_for(case.state, move)
        p = _clean_params(session, case, move, reason, params)
        unmet = run_guards(t.guards, GuardContext(session, case, now, p))
        if unmet:
            raise GuardFailed(move.label.lower(), unmet)
        require_case_right(actor, t.permission, case)

        from_state = case.state
        to_state = target_state(move, closed_from_state=case.closed_from_state).value
        days_in = max(0.0, days_between(case.state_entered_at, now))
        changes = _move_changes(move, case, p)
        outcome_recorded = case.outcome_recorded_at is not None
        changes.update(
            state=to_state,
            state_entered_at=now,
            paused_seconds=0,
            # A move ends a hold: the new state starts its own clock.
            on_hold=False, hold_reason=None, hold_started_at=None, hold_until=None,
            **deadline_fields(session, state=to_state, state_entered_at=now,
                              paused_seconds=0, on_hold=False,
                              outcome_recorded=outcome_recorded, limits=limits),
        )
        # the funnel's "reached" (closed has no rank and raises nothing)
        compare_and_set(session, case, actor=actor, now=now, changes=changes,
                        reached=FUNNEL_RANK.get(to_state))
        add_event(session, case=case, from_state=from_state, at=now, actor=actor,
                  reason=_event_reason(move, p), days_in_from_state=days_in)
        detail = {"move": move.value, "from": from_state, "to": to_state,
                  "version": case.version}
        if p.get("missing_items"):
            records.request_again(session, case_id=case.id, item_ids=p["missing_items"],
                                  now=now)
            detail["missing_items"] = list(p["missing_items"])
        audit.record(session, actor=actor, action="case.move", now=now, case_id=case.id,
                     detail=detail)
    return case


def open_case(session: Session, *, case: Case, actor: Actor, now: datetime) -> Case:
    """Insert a new case in `assessed` with its intake history row, deadlines and audit row.
    The caller (intake) has filled in everything but the state and its clocks."""
    now = utc(now, field="now")
    with atomic(session):
        case.state = CaseState.ASSESSED.value
        case.version = 1
        case.state_entered_at = now
        case.paused_seconds = 0
        case.created_at = now
        case.updated_at = now
        case.updated_by_id = actor.user_id
        case.furthest_rank = FUNNEL_RANK[case.state]
        for name, value in deadline_fields(
            session, state=case.state, state_entered_at=now, paused_seconds=0,
            on_hold=False, outcome_recorded=False,
        ).items():
            setattr(case, name, value)
        session.add(case)
        session.flush()
        add_event(session, case=case, from_state=None, at=now, actor=actor)
        audit.record(session, actor=actor, action="case.create", now=now, case_id=case.id,
                     detail={"state": case.state, "version": case.version})
    return case


def get_case_for_view(session: Session, *, case_id: int, actor: Actor, now: datetime) -> Case:
    """A case for display: VIEW_CASE for its team, and the view is audited (use a write
    session: the audit row is a write)."""
    now = utc(now, field="now")
    with savepoint(session):
        case = load_case(session, case_id)
        require_case_right(actor, Action.VIEW_CASE, case)
        audit.record(session, actor=actor, action="case.view", now=now, case_id=case.id)
    return case


__all__ = [
    "MOVE_PARAMS",
    "Move",
    "NotFoundError",
    "available_moves",
    "get_case_for_view",
    "move_case",
    "open_case",
    "parse_datetime",
    "unmet_conditions",
]
