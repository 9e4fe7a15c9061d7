"""Random sequences of operations on a case (Hypothesis, stateful). After every step:
history replays to the current state, versions only grow, exactly one history row per
move, the stored deadlines match the clock rules, and stored time-in-stage adds up."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlmodel import select

from core.db import session_scope
from core.errors import CaseDeskError
from core.models import Case, CaseEvent
from core.timeutil import days_between
from core.vocab import CaseState, CloseReason, OutcomeDiagnosis, OutcomePlan
from core.workflows import case_ops
from core.workflows.clocks import deadlines_for_case, load_limits
from core.workflows.engine import move_case
from core.workflows.states import Move
from core.workflows.write import holiday_country
from tests.workflows.helpers import (
    advance,
    make_world,
    new_case,
    satisfy_records_complete,
    satisfy_request_records,
)


class CaseMachine(RuleBasedStateMachine):
    engine = None  # set per test (one database per backend)
    world = None
    start = None

    def __init__(self):
        super().__init__()
        with session_scope(self.engine) as s:
            case = new_case(s, self.world, self.start)
        self.case_id = case.id
        self.now = self.start + timedelta(minutes=1)
        self.moves = 0
        self.last_version = case.version

    # --- helpers --------------------------------------------------------------------

    def _version(self) -> int:
        with session_scope(self.engine, write=False) as s:
            return s.get(Case, self.case_id).version

    def _attempt(self, op) -> bool:
        """Run op in its own transaction; a refusal must leave the case untouched."""
        before = self._version()
        try:
            with session_scope(self.engine) as s:
                op(s)
        except CaseDeskError:
            assert self._version() == before
            return False
        return True

    def _tick(self, minutes: int = 1) -> None:
        self.now += timedelta(minutes=minutes)

    # --- rules ------------------------------------------------------------------------

    @rule(hours=st.integers(min_value=0, max_value=24 * 16), minutes=st.integers(0, 59))
    def time_passes(self, hours, minutes):
        self.now += timedelta(hours=hours, minutes=minutes)

    @rule(
        move=st.sampled_from(list(Move)),
        reason=st.sampled_from([None, "", "patient asked"]),
        close_reason=st.sampled_from(list(CloseReason)),
        appointment_in_hours=st.integers(min_value=-48, max_value=24 * 20),
        by_manager=st.booleans(),
    )
    def try_a_move(self, move, reason, close_reason, appointment_in_hours, by_manager):
        self._tick()
        actor = self.world.mgr if by_manager else self.world.coord
        kwargs = {}
        if move is Move.SCHEDULE:
            kwargs["appointment_at"] = self.now + timedelta(hours=appointment_in_hours)
        if move is Move.CLOSE:
            kwargs["close_reason"] = close_reason
        now = self.now

        def op(s):
            move_case(s, case_id=self.case_id, move=move, actor=actor, now=now,
                      reason=reason, **kwargs)

        if self._attempt(op):
            self.moves += 1

    def _advance(self):
        with session_scope(self.engine, write=False) as s:
            state = s.get(Case, self.case_id).state
        if state in (CaseState.SEEN, CaseState.CLOSED):
            return
        self._tick()
        result = {}

        def op(s):
            result["t"] = advance(s, self.world, s.get(Case, self.case_id), self.now)[1]

        if self._attempt(op):
            self.moves += 1
            self.now = result["t"]

    # Two rules for the same step make the walk reach the far end of the funnel often.
    @rule()
    def take_the_next_step_down_the_funnel(self):
        self._advance()

    @rule()
    def take_another_step_down_the_funnel(self):
        self._advance()

    @rule()
    def get_ready_to_request_records(self):
        self._tick()
        self._attempt(lambda s: satisfy_request_records(
            s, self.world, s.get(Case, self.case_id), self.now))

    @rule()
    def receive_every_required_record(self):
        self._tick()
        self._attempt(lambda s: satisfy_records_complete(
            s, self.world, s.get(Case, self.case_id), self.now))

    @rule()
    def wait_for_the_appointment(self):
        with session_scope(self.engine, write=False) as s:
            at = s.get(Case, self.case_id).appointment_at
        if at is not None and at > self.now:
            self.now = at

    @rule(days=st.integers(min_value=1, max_value=10))
    def put_on_hold(self, days):
        self._tick()
        resume_on = (self.now + timedelta(days=days + 1)).date()
        self._attempt(lambda s: case_ops.put_on_hold(
            s, case_id=self.case_id, reason="waiting for the lab", resume_on=resume_on,
            actor=self.world.coord, now=self.now))

    @rule()
    def resume(self):
        self._tick()
        self._attempt(lambda s: case_ops.resume(s, case_id=self.case_id,
                                                actor=self.world.coord, now=self.now))

    @rule()
    def add_a_note(self):
        self._tick()
        self._attempt(lambda s: case_ops.add_note(s, case_id=self.case_id, body="called",
                                                  actor=self.world.coord, now=self.now))

    @rule(diagnosis=st.sampled_from(list(OutcomeDiagnosis)))
    def record_the_outcome(self, diagnosis):
        self._tick()
        sources = [] if diagnosis in (OutcomeDiagnosis.CONFIRMED,
                                      OutcomeDiagnosis.NOT_ASSESSABLE) else ["pathology"]
        self._attempt(lambda s: case_ops.record_outcome(
            s, case_id=self.case_id, diagnosis=diagnosis, plan=OutcomePlan.UNCHANGED,
            sources=sources, additional_cancer_found=False, actor=self.world.coord,
            now=self.now))

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def history_and_clocks_agree_with_the_case(self):
        with session_scope(self.engine, write=False) as s:
            case = s.get(Case, self.case_id)
            events = s.exec(select(CaseEvent).where(CaseEvent.case_id == self.case_id)
                            .order_by(CaseEvent.id)).all()
            limits = load_limits(s)

        # history replays to the current state
        assert events[0].from_state is None and events[0].to_state == CaseState.ASSESSED
        state = events[0].to_state
        for e in events[1:]:
            assert e.from_state == state
            state = e.to_state
        assert state == case.state

        # exactly one history row per move
        assert len(events) == 1 + self.moves

        # versions only grow
        assert case.version >= self.last_version
        self.last_version = case.version
        versions = [e.version for e in events]
        assert versions == sorted(set(versions))
        assert versions[-1] <= case.version

        # due_at matches the clock rules
        expected = deadlines_for_case(case, limits, holiday_country())
        assert (case.due_soon_at, case.due_at, case.escalate_at) == (
            expected.due_soon_at, expected.due_at, expected.escalate_at)
        if case.on_hold or case.state == CaseState.CLOSED:
            assert case.due_at is None

        # stored time-in-stage adds up to the time from intake to the current state
        assert case.state_entered_at == events[-1].at
        stored = sum(e.days_in_from_state for e in events[1:])
        assert abs(stored - days_between(events[0].at, case.state_entered_at)) < 1e-6

        # closed exactly when a close reason is stored
        assert (case.state == CaseState.CLOSED) == (case.close_reason is not None)


def test_random_sequences_of_operations_keep_history_versions_and_clocks_consistent(
        engine, now):
    with session_scope(engine) as s:
        world = make_world(s, now)
    machine = type("CaseMachineRun", (CaseMachine,),
                   {"engine": engine, "world": world, "start": now})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=10, stateful_step_count=20, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow]))
