"""The case page: the patient and the case at a glance, and every action on it.

Every write passes the version of the case this page showed (`expected_version`), so a
change made by someone else in between is refused with "changed by ... at ..., reload"
and nothing is written (the engine's compare-and-set).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pandas as pd
import streamlit as st

from core.config import get_settings
from core.db import get_engine, session_scope
from core.errors import CaseDeskError
from core.permissions import Action
from core.queries.case_detail import case_detail, find_case_id
from core.timeutil import utcnow
from core.validation import case_number
from core.vocab import (
    ChangeSource,
    CloseReason,
    ContactChannel,
    ContactOutcome,
    OutcomeDiagnosis,
    OutcomePlan,
    RecordKind,
    RecordStatus,
    ReferralStatus,
)
from dashboard import ui
from dashboard.guard import require_page

actor = require_page(Action.VIEW_CASE)
now = utcnow()
engine = get_engine()
settings = get_settings()

# --- which case ---------------------------------------------------------------------------
raw_id = st.query_params.get("case") or st.session_state.get("case_id")
with st.sidebar:
    lookup = st.text_input("Open case by number or record number", key="case_lookup")
    if st.button("Open", key="case_lookup_go") and lookup:
        with session_scope(engine, write=False) as s:
            found = find_case_id(s, actor=actor, text=lookup)
        if found is None:
            st.error("No case with that number or record number in your reach.")
        else:
            ui.open_case(found)

if not raw_id:
    ui.header("Case", actor)
    st.info("Open a case from My day, or by its number in the sidebar.")
    st.stop()
case_id = case_number(raw_id)
if case_id is None:
    ui.header("Case", actor)
    st.error("That is not a case number.")
    st.stop()

try:
    with session_scope(engine) as s:  # a write session: viewing a case is audited
        d = case_detail(s, case_id=case_id, actor=actor, now=now)
except CaseDeskError as exc:
    ui.header("Case", actor)
    ui.show_error(exc)
    st.stop()

case, patient = d.case, d.patient
VERSION_KEY = f"_case_version_{case.id}"
# The version this page showed last time: actions clicked on that rendering must not
# overwrite a change made since by someone else.
shown_version = st.session_state.get(VERSION_KEY, case.version)


def act(done: str, fn, **kwargs) -> None:  # noqa: ANN001
    """Run one core operation in its own transaction; on success say so and reload."""
    try:
        with session_scope(engine) as s:
            fn(s, actor=actor, now=now, **kwargs)
    except CaseDeskError as exc:
        ui.show_error(exc)
        if "changed by" in str(exc):
            st.button("Reload", key="reload_after_stale", icon=":material/refresh:")
        return
    # The version shown is kept until the next full rendering replaces it (end of page):
    # a second click queued on the old rendering (a double click) is then refused as
    # stale instead of writing twice.
    st.session_state["_flash"] = done
    st.rerun()


def case_act(done: str, fn, **kwargs) -> None:  # noqa: ANN001
    act(done, fn, case_id=case.id, expected_version=shown_version, **kwargs)


flash = st.session_state.pop("_flash", None)
if flash:
    st.success(flash, icon=":material/check_circle:")

# --- at a glance ----------------------------------------------------------------------------
ui.header(f"Case {case.id}: {ui.safe(patient.first_name)} {ui.safe(patient.last_name)}", actor,
          subtitle=f"Record number {patient.mrn} · {d.team_name} · "
                   f"coordinator {d.assignee_name or 'unassigned'}")
ui.stepper(case.state)

g1, g2, g3 = st.columns(3)
with g1:
    st.markdown("**Step clock**")
    ui.level_badge(d.sla.text, d.sla.level)
    if case.due_at:
        ui.when(case.due_at, now, prefix="Limit reached ")
with g2:
    st.markdown("**Patient clock**")
    ui.level_badge(d.patient_clock.text, d.patient_clock.level)
    if case.biopsy_date:
        st.caption(f"Biopsy {case.biopsy_date.isoformat()}")
with g3:
    st.markdown("**Case**")
    st.caption(ui.safe(
        f"{ui.label(case.diagnosis_category)} · {ui.label(case.priority)} · "
        f"specialist: {d.specialist_name or 'not chosen'}"))
    if case.appointment_at:
        ui.when(case.appointment_at, now, prefix="Appointment ")
    if case.referral_required:
        st.caption(f"Insurance referral: {ui.label(case.referral_status)}")
    if case.on_hold:
        st.caption(ui.safe(f"On hold: {case.hold_reason}"))
    if case.candidacy_reasons:
        st.caption(ui.safe(case.candidacy_reasons))

if d.flags:
    st.subheader("Open flags")
    for f, level in d.flags:  # level: now, derived from the case (core.flag_levels)
        fc1, fc2, fc3 = st.columns([3, 4, 1])
        with fc1:
            ui.level_badge(f"{ui.label(f.kind)}: {ui.label(level.value)}", level.value)
        if f.acknowledged_at:
            fc2.caption(ui.safe(f"Acknowledged {ui.human(f.acknowledged_at, now)}: "
                                f"{f.ack_note}"))
        elif d.may_work:
            note = fc2.text_input("What are you doing about it?", key=f"ack_note_{f.id}",
                                  label_visibility="collapsed",
                                  placeholder="Note: what you are doing about it")
            if fc3.button("Acknowledge", key=f"ack_{f.id}"):
                from core.scan.flags import acknowledge_flag

                act("Flag acknowledged.", acknowledge_flag, flag_id=f.id, note=note)
        if f.detail:
            fc2.caption(ui.safe(f.detail))

# --- moves ----------------------------------------------------------------------------------
st.subheader("Move the case on")
from core.workflows.engine import move_case  # noqa: E402
from core.workflows.states import Move  # noqa: E402

REASON_MOVES = {Move.RECORD_MISSING, Move.NO_SHOW, Move.REOPEN}
if not d.moves:
    st.caption("No moves from here.")
for move, unmet in d.moves.items():
    with st.container(border=True):
        if unmet:
            st.button(move.label, key=f"move_{move.value}", disabled=True)
            st.caption("Not possible yet: " + ui.safe("; ".join(unmet)))
            continue
        if move is Move.SCHEDULE:
            s1, s2, s3, s4 = st.columns(4)
            day = s1.date_input("Appointment date", key="sched_date",
                                value=ui.local(now).date() + timedelta(days=7))
            at_time = s2.time_input("Time", key="sched_time", value=time(10, 0))
            spec_ids = [sid for sid, _ in d.specialists]
            spec_names = dict(d.specialists)
            spec = s3.selectbox("Specialist", spec_ids, key="sched_specialist",
                                index=spec_ids.index(case.specialist_id)
                                if case.specialist_id in spec_ids else 0,
                                format_func=spec_names.get) if spec_ids else None
            mode = s4.selectbox("Mode", ["in_person", "telehealth"], key="sched_mode",
                                index=1 if case.telehealth_preferred else 0,
                                format_func=ui.label)
            if st.button(move.label, key=f"move_{move.value}", type="primary"):
                when_local = datetime.combine(day, at_time, tzinfo=settings.tz)
                case_act("Visit scheduled.", move_case, move=move,
                         appointment_at=when_local, specialist_id=spec,
                         appointment_mode=mode)
        elif move is Move.CLOSE:
            st.caption("Close: the case leaves the funnel (with a reason).")
            cc1, cc2 = st.columns([1, 2])
            # No default: a hurried click must not record "not a candidate" by accident.
            reason = cc1.selectbox("Reason for closing", [r.value for r in CloseReason],
                                   key="close_reason", format_func=ui.label, index=None,
                                   placeholder="Choose a reason")
            note = cc2.text_input("Note", key="close_note")
            if st.button(move.label, key=f"move_{move.value}"):
                case_act("Case closed.", move_case, move=move, close_reason=reason,
                         close_note=note or None)
        elif move is Move.RECORD_MISSING:
            # Which records are missing: they go back to requested with the case, so it
            # cannot be marked complete again before they arrive.
            arrived = {i.id: f"{RecordKind(i.kind).label} ({i.facility}) - {i.status}"
                       for i in d.records
                       if i.status in (RecordStatus.RECEIVED, RecordStatus.WAIVED)}
            missing = st.multiselect("Which records are missing", list(arrived),
                                     key=f"missing_items_{case.id}", format_func=arrived.get,
                                     help="A record not on the checklist: add it under "
                                          "Records first.")
            reason = st.text_input(f"Reason ({move.label.lower()})", key=f"reason_{move.value}")
            if st.button(move.label, key=f"move_{move.value}"):
                case_act(f"{move.label}: the records are requested again.", move_case,
                         move=move, reason=reason or None, missing_items=missing)
        elif move in REASON_MOVES:
            reason = st.text_input(f"Reason ({move.label.lower()})", key=f"reason_{move.value}")
            if st.button(move.label, key=f"move_{move.value}"):
                case_act(f"{move.label}: done.", move_case, move=move, reason=reason or None)
        else:
            if st.button(move.label, key=f"move_{move.value}", type="primary"):
                case_act(f"{move.label}: done.", move_case, move=move)

if d.may_work:
    from core.workflows import case_ops, contacts, records  # noqa: E402

    # --- contact attempts: two clicks (channel, then what happened) ------------------------
    st.subheader("Contact the patient")
    contact_bits = [b for b in (patient.phone, patient.email) if b]
    if contact_bits:
        st.caption(ui.safe(" · ".join(contact_bits)))
    k1, k2 = st.columns([1, 3])
    channel = k1.selectbox("Channel", [c.value for c in ContactChannel], key="contact_channel",
                           format_func=ui.label)
    contact_note = k2.text_input("Note (optional)", key="contact_note")
    outcome_cols = st.columns(len(ContactOutcome))
    for col, outcome in zip(outcome_cols, ContactOutcome, strict=True):
        if col.button(ui.label(outcome.value).capitalize(), key=f"contact_{outcome.value}"):
            case_act(f"Contact attempt logged ({ui.label(outcome.value)}).", contacts.log_contact,
                     channel=channel, outcome=outcome.value, note=contact_note or None)
    if d.contacts:
        with st.expander(f"Contact attempts ({len(d.contacts)})"):
            for attempt, who in d.contacts:
                st.markdown(
                    ui.safe(f"{ui.human(attempt.at, now)} - {ui.label(attempt.channel)}, "
                            f"{ui.label(attempt.outcome)} ({who})"
                            + (f": {attempt.note}" if attempt.note else "")),
                    help=ui.exact(attempt.at))

    # --- referral and specialist ------------------------------------------------------------
    st.subheader("Specialist and referral")
    r1, r2 = st.columns(2)
    with r1:
        spec_ids = [sid for sid, _ in d.specialists]
        spec_names = dict(d.specialists)
        if spec_ids:
            chosen_spec = st.selectbox(
                "Specialist", spec_ids, key="specialist_choice",
                index=spec_ids.index(case.specialist_id) if case.specialist_id in spec_ids
                else 0, format_func=lambda v: spec_names[v])
            if st.button("Choose specialist", key="choose_specialist"):
                case_act("Specialist chosen.", case_ops.choose_specialist,
                         specialist_id=chosen_spec)
        else:
            st.caption("No specialists are set up.")
    with r2:
        if case.referral_required:
            statuses = [s.value for s in ReferralStatus if s is not ReferralStatus.NOT_REQUIRED]
            status = st.selectbox("Insurance referral", statuses, key="referral_status",
                                  index=statuses.index(case.referral_status)
                                  if case.referral_status in statuses else 0,
                                  format_func=ui.label)
            # Prefilled with the number on file (the key is per case): saving the status
            # again must not erase it; emptying the box is how it is removed.
            auth = st.text_input("Authorisation number", key=f"referral_auth_{case.id}",
                                 value=case.authorization_number or "")
            if st.button("Update referral", key="update_referral"):
                case_act("Referral updated.", case_ops.set_referral_status,
                         referral_status=status, authorization_number=auth or None)
        else:
            st.caption("The patient's plan needs no insurance referral.")

    # --- records checklist --------------------------------------------------------------------
    st.subheader("Records")
    if d.records:
        st.dataframe(pd.DataFrame({
            "Record": [RecordKind(i.kind).label for i in d.records],
            "From": [i.facility for i in d.records],
            "Needed": [i.requirement for i in d.records],
            "Status": [i.status for i in d.records],
            "Requested": [ui.human(i.requested_at, now) if i.requested_at else "-"
                          for i in d.records],
            "Received": [ui.human(i.received_at, now) if i.received_at else "-"
                         for i in d.records],
            "Chase on": [i.chase_on.isoformat() if i.chase_on else "-" for i in d.records],
            "Tracking": [i.tracking_number or "" for i in d.records],
            "Waived because": [i.waive_reason or "" for i in d.records],
        }), hide_index=True, width="stretch", key="records_table")
        open_items = [i for i in d.records
                      if i.status in (RecordStatus.NEEDED, RecordStatus.REQUESTED)]
        if open_items:
            item_names = {i.id: f"{RecordKind(i.kind).label} ({i.facility}) - {i.status}"
                          for i in open_items}
            item_id = st.selectbox("Record", list(item_names), key="rec_item",
                                   format_func=lambda v: item_names[v])
            a1, a2, a3, a4 = st.columns(4)
            if a1.button("Request", key="rec_request"):
                act("Record requested.", records.request_record, item_id=item_id,
                    expected_version=shown_version)
            tracking = a2.text_input("Tracking number", key="rec_tracking")
            if a2.button("Mark received", key="rec_receive"):
                act("Record received.", records.receive_record, item_id=item_id,
                    tracking_number=tracking or None, expected_version=shown_version)
            if a2.button("Save tracking number", key="rec_set_tracking"):
                if not tracking.strip():
                    # an empty box would erase the number on file
                    st.error("Type the tracking number first.")
                else:
                    act("Tracking number saved.", records.set_tracking_number,
                        item_id=item_id, tracking_number=tracking,
                        expected_version=shown_version)
            waive_reason = a3.text_input("Reason for waiving", key="rec_waive_reason")
            if a3.button("Waive", key="rec_waive"):
                act("Record waived.", records.waive_record, item_id=item_id,
                    reason=waive_reason, expected_version=shown_version)
            chase = a4.date_input("Chase on", key="rec_chase_date",
                                  value=ui.local(now).date() + timedelta(days=7))
            if a4.button("Set chase date", key="rec_chase"):
                act("Chase date set.", records.set_chase_date, item_id=item_id,
                    chase_on=chase, expected_version=shown_version)
    else:
        st.caption("No records on the checklist.")
    if case.state != "closed":
        with st.expander("Add a record to the checklist"):
            n1, n2, n3 = st.columns([2, 2, 1])
            new_kind = n1.selectbox("Record", [k.value for k in RecordKind], key="add_kind",
                                    format_func=lambda v: RecordKind(v).label)
            new_from = n2.text_input("From (facility)", key="add_facility")
            new_required = n3.checkbox("Required", key="add_required", value=True)
            if st.button("Add to the checklist", key="add_record"):
                act("Record added to the checklist.", records.add_record_item,
                    case_id=case.id, kind=new_kind, facility=new_from,
                    requirement="required" if new_required else "optional",
                    expected_version=shown_version)

    # --- outcome once seen ------------------------------------------------------------------
    if case.state == "seen":
        st.subheader("Outcome of the second opinion")
        with st.form("outcome_form"):
            o1, o2 = st.columns(2)
            dx = o1.selectbox("Diagnosis", [v.value for v in OutcomeDiagnosis],
                              key="outcome_dx", format_func=ui.label)
            plan = o2.selectbox("Treatment plan", [v.value for v in OutcomePlan],
                                key="outcome_plan", format_func=ui.label)
            sources = st.multiselect("What led to the change", [v.value for v in ChangeSource],
                                     key="outcome_sources", format_func=ui.label)
            extra = st.checkbox("Additional cancer found", key="outcome_extra")
            if st.form_submit_button("Record outcome"):
                case_act("Outcome recorded.", case_ops.record_outcome, diagnosis=dx,
                         plan=plan, sources=sources, additional_cancer_found=extra)

    # --- hold / resume ----------------------------------------------------------------------
    if case.state != "closed":
        st.subheader("Hold")
        if case.on_hold:
            if st.button("Resume", key="resume"):
                case_act("Case resumed: the clock runs again.", case_ops.resume)
        else:
            h1, h2 = st.columns([2, 1])
            hold_reason = h1.text_input("Waiting on a third party because", key="hold_reason")
            resume_on = h2.date_input("Resume on", key="hold_until",
                                      value=ui.local(now).date() + timedelta(days=7))
            if st.button("Put on hold", key="hold"):
                case_act("Case on hold: the step clock is paused.", case_ops.put_on_hold,
                         reason=hold_reason, resume_on=resume_on)

    # --- notes ------------------------------------------------------------------------------
    st.subheader("Notes")
    # The box is emptied only once the note is saved: a refused note (too long, say) keeps
    # its text so it can be shortened instead of typed again.
    # A fresh key after each saved note gives an empty box (setting the value is not
    # enough: the browser keeps what was typed in a form that is not cleared).
    if st.session_state.pop("_note_saved", False):
        st.session_state["_note_box"] = st.session_state.get("_note_box", 0) + 1
    box = st.session_state.get("_note_box", 0)
    with st.form("note_form"):
        body = st.text_area("New note", key=f"note_body_{box}" if box else "note_body")
        if st.form_submit_button("Add note"):
            st.session_state["_note_saved"] = True
            case_act("Note added.", case_ops.add_note, body=body)  # reruns when saved
            st.session_state.pop("_note_saved", None)

# --- assignment -------------------------------------------------------------------------------
if case.state != "closed" and (d.may_reassign or (d.may_work and case.assignee_id is None)):
    st.subheader("Coordinator")
    if d.may_reassign:
        ids = [uid for uid, _ in d.assignees]
        names = dict(d.assignees)
        if ids:
            who = st.selectbox("Assign to", ids, key="assign_to",
                               index=ids.index(case.assignee_id)
                               if case.assignee_id in ids else 0,
                               format_func=lambda v: names[v])
            if st.button("Reassign", key="reassign"):
                from core.workflows.case_ops import assign

                case_act("Case reassigned.", assign, assignee_id=who)
    elif st.button("Take this case", key="take_case"):
        from core.workflows.case_ops import assign

        case_act("The case is yours.", assign, assignee_id=actor.user_id)

if d.notes:
    for note, who in d.notes:
        with st.container(border=True):
            st.caption(f"{ui.human(note.at, now)} · {ui.safe(who)}", help=ui.exact(note.at))
            st.text(note.body)  # plain text: never Markdown or HTML

# --- history ------------------------------------------------------------------------------
st.subheader("History")
for event, who in d.history:
    src = ui.state_label(event.from_state) if event.from_state else "new case"
    line = f"{ui.human(event.at, now)} - {src} → {ui.state_label(event.to_state)} by {who}"
    if event.reason:
        line += f": {event.reason}"
    st.markdown(ui.safe(line), help=ui.exact(event.at))

st.session_state[VERSION_KEY] = case.version
