"""New case: the candidacy assessment -> the result with its reasons -> create the case
(a non-candidate is recorded too, closed at once with the reason)."""

from __future__ import annotations

from datetime import date

import streamlit as st

from core.db import get_engine, session_scope
from core.errors import CaseDeskError
from core.permissions import Action
from core.queries.triage import filter_choices
from core.timeutil import utcnow
from core.vocab import DiagnosisCategory, Role, SecondOpinionReason, TreatmentStatus
from core.workflows.candidacy import REASON_TEXT
from core.workflows.intake import Assessment, assess, create_case_from_assessment
from dashboard import ui
from dashboard.guard import require_page

actor = require_page(Action.CREATE_CASE)
now = utcnow()
engine = get_engine()
today = ui.local(now).date()


def _years_from(day: date, years: int) -> date:
    """`day` moved by whole years; 29 February becomes 28 February in other years."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


ui.header("New case", actor, subtitle="The candidacy assessment")

with st.form("assessment"):
    n1, n2, n3 = st.columns(3)
    first = n1.text_input("First name", key="nc_first")
    last = n2.text_input("Last name", key="nc_last")
    mrn = n3.text_input("Record number (optional)", key="nc_mrn")
    p1, p2, p3 = st.columns(3)
    phone = p1.text_input("Phone", key="nc_phone")
    email = p2.text_input("E-mail", key="nc_email")
    # The two past dates may be picked up to a year ahead: the widget would turn a future
    # date into "no date" silently, the assessment refuses it with a message instead.
    dob = p3.date_input("Date of birth", key="nc_dob", value=None,
                        min_value=_years_from(today, -110), max_value=_years_from(today, 1))
    d1, d2, d3 = st.columns(3)
    diagnosis = d1.selectbox("Diagnosis", [v.value for v in DiagnosisCategory], key="nc_dx",
                             format_func=ui.label)
    biopsy = d2.date_input("Diagnosing biopsy", key="nc_biopsy", value=None,
                           max_value=_years_from(today, 1),
                           min_value=_years_from(today, -20))
    treatment = d3.selectbox("Treatment so far", [v.value for v in TreatmentStatus],
                             key="nc_treatment", format_func=ui.label)
    planned = st.date_input("Planned treatment start (if known)", key="nc_planned", value=None)
    reasons = st.multiselect("Why a second opinion", [v.value for v in SecondOpinionReason],
                             key="nc_reasons",
                             format_func=lambda v: REASON_TEXT[SecondOpinionReason(v)])
    f1, f2 = st.columns(2)
    biopsy_facility = f1.text_input("Where the biopsy was done", key="nc_biopsy_facility")
    imaging_facility = f2.text_input("Where the imaging was done", key="nc_imaging_facility")
    i1, i2, i3 = st.columns(3)
    insurer = i1.text_input("Insurer", key="nc_insurer")
    member = i2.text_input("Member id", key="nc_member")
    referral_required = i3.checkbox("The plan needs an insurance referral", key="nc_referral")
    telehealth = st.checkbox("Prefers a telehealth visit", key="nc_telehealth")
    assessed = st.form_submit_button("Assess", type="primary")

assessment = Assessment(
    first_name=first, last_name=last, mrn=mrn or None, phone=phone or None,
    email=email or None, date_of_birth=dob, diagnosis_category=diagnosis, biopsy_date=biopsy,
    treatment_status=treatment, planned_treatment_start=planned, reasons=tuple(reasons),
    biopsy_facility=biopsy_facility or None, imaging_facility=imaging_facility or None,
    insurer=insurer or None, insurance_member_id=member or None,
    referral_required=referral_required, telehealth_preferred=telehealth,
)

if assessed:
    st.session_state["_nc_assessed"] = assessment
if st.session_state.get("_nc_assessed") != assessment:
    # The answers changed since the last assessment: assess again before creating.
    st.session_state.pop("_nc_assessed", None)
    st.stop()

try:
    result = assess(assessment, today)
except CaseDeskError as exc:
    ui.show_error(exc)
    st.stop()

if result.candidate:
    st.success("Candidate" + (" - urgent" if result.urgent else ""), icon=":material/check:")
else:
    st.warning("Not a candidate", icon=":material/block:")
for reason in result.reasons:
    st.markdown(f"- {ui.safe(reason)}")

assignee_id = actor.user_id if actor.role is Role.COORDINATOR else None
if actor.role is not Role.COORDINATOR:
    with session_scope(engine, write=False) as s:
        people = filter_choices(s, actor=actor)["assignees"]
    options = [None] + [uid for uid, _ in people]
    names = {None: "Unassigned", **dict(people)}
    assignee_id = st.selectbox("Coordinator", options, key="nc_assignee",
                               format_func=lambda v: names[v])

label = "Create case" if result.candidate else "Record non-candidate"
if st.button(label, key="nc_create", type="primary"):
    try:
        with session_scope(engine) as s:
            case = create_case_from_assessment(s, assessment=assessment,
                                               team_id=actor.team_id, assignee_id=assignee_id,
                                               actor=actor, now=now)
            new_id = case.id
    except CaseDeskError as exc:
        ui.show_error(exc)
        st.stop()
    st.session_state.pop("_nc_assessed", None)
    ui.open_case(new_id)
