"""The case state machine, declared once as a readable table (DESIGN.md section 4).

States are `core.vocab.CaseState`. Each move lists the states it may start from, the state
it leads to, the named guards it must pass (see `core.workflows.guards`) and the
permission it needs. Everything else - pages, the scan, demo data - reads this table
instead of repeating it, so the rules live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.errors import TransitionNotAllowed
from core.permissions import Action
from core.vocab import OPEN_STATES, CaseState


class Move(StrEnum):
    START_REFERRAL = "start_referral"
    REQUEST_RECORDS = "request_records"
    RECORDS_COMPLETE = "records_complete"
    SCHEDULE = "schedule"
    MARK_SEEN = "mark_seen"
    RECORD_MISSING = "record_missing"
    NO_SHOW = "no_show"
    CLOSE = "close"
    REOPEN = "reopen"

    @property
    def label(self) -> str:
        """Button text."""
        return MOVE_LABELS[self]


MOVE_LABELS: dict[Move, str] = {
    Move.START_REFERRAL: "Start referral",
    Move.REQUEST_RECORDS: "Request records",
    Move.RECORDS_COMPLETE: "Records complete",
    Move.SCHEDULE: "Schedule visit",
    Move.MARK_SEEN: "Mark seen",
    Move.RECORD_MISSING: "Record missing",
    Move.NO_SHOW: "No-show / cancelled",
    Move.CLOSE: "Close case",
    Move.REOPEN: "Reopen case",
}


@dataclass(frozen=True)
class Transition:
    move: Move
    sources: tuple[CaseState, ...]
    # None: back to the state the case was closed from (reopen).
    target: CaseState | None
    guards: tuple[str, ...]
    permission: Action = Action.MOVE_CASE


S = CaseState
# move               from                               to                   guards
TRANSITIONS: dict[Move, Transition] = {
    t.move: t
    for t in (
        Transition(Move.START_REFERRAL, (S.ASSESSED,), S.REFERRAL,
                   ("candidate", "coordinator_assigned")),
        Transition(Move.REQUEST_RECORDS, (S.REFERRAL,), S.RECORDS_REQUESTED,
                   ("specialist_chosen", "insurance_referral_cleared", "releases_on_file")),
        Transition(Move.RECORDS_COMPLETE, (S.RECORDS_REQUESTED,), S.RECORDS_RECEIVED,
                   ("required_records_in",)),
        Transition(Move.SCHEDULE, (S.RECORDS_RECEIVED,), S.SCHEDULED,
                   ("specialist_chosen", "appointment_in_future",
                    "appointment_after_records_requested")),
        Transition(Move.MARK_SEEN, (S.SCHEDULED,), S.SEEN,
                   ("appointment_passed",)),
        Transition(Move.RECORD_MISSING, (S.RECORDS_RECEIVED,), S.RECORDS_REQUESTED,
                   ("reason_given", "missing_records_named")),
        Transition(Move.NO_SHOW, (S.SCHEDULED,), S.RECORDS_RECEIVED,
                   ("reason_given",)),
        Transition(Move.CLOSE, OPEN_STATES, S.CLOSED,
                   ("close_reason_valid",)),
        Transition(Move.REOPEN, (S.CLOSED,), None,
                   ("reason_given",), permission=Action.REOPEN),
    )
}


def allowed_moves(state: str | CaseState) -> list[Move]:
    """Moves the table allows from `state`, in funnel order (guards not checked)."""
    state = CaseState(state)
    return [m for m, t in TRANSITIONS.items() if state in t.sources]


def transition_for(state: str | CaseState, move: Move) -> Transition:
    """The table row for `move` from `state`; TransitionNotAllowed naming what is allowed."""
    state = CaseState(state)
    t = TRANSITIONS[move]
    if state not in t.sources:
        raise TransitionNotAllowed(
            state.value, move.label.lower(), [m.label.lower() for m in allowed_moves(state)]
        )
    return t


def target_state(move: Move, *, closed_from_state: str | None) -> CaseState:
    t = TRANSITIONS[move]
    if t.target is not None:
        return t.target
    # A closed case always records where it came from (the close move stores it).
    return CaseState(closed_from_state or CaseState.ASSESSED)
