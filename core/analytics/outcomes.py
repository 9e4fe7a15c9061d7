"""How second opinions turn out (item 4) and how fast patients get one (item 5)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from sqlalchemy import case, func, select
from sqlmodel import Session

from core.actor import Actor
from core.analytics.filters import CaseFilter, days_from_date_to_day_of, month_of
from core.analytics.stats import wilson_interval
from core.models import Case, CaseEvent, User
from core.permissions import Action
from core.vocab import CaseState, OutcomeDiagnosis, OutcomePlan

if TYPE_CHECKING:
    import pandas as pd

# Van Such M, Lohr R, Beckman T, Naessens JM. Extent of diagnostic agreement among medical
# referrals. J Eval Clin Pract 2017;23(4):870-874. Mayo Clinic, n = 286 referrals to its
# general internal medicine division - a general-medicine benchmark, not a breast-cancer one.
BENCHMARK_LABEL = "Mayo Clinic general-medicine referrals (Van Such et al. 2017, n = 286)"
BENCHMARK_N = 286
BENCHMARK: dict[str, float] = {
    OutcomeDiagnosis.CONFIRMED.value: 0.12,
    OutcomeDiagnosis.REFINED.value: 0.66,
    OutcomeDiagnosis.CHANGED.value: 0.21,
}
OUTCOME_COLUMNS = ["kind", "category", "label", "cases", "total", "share", "ci_low",
                   "ci_high", "benchmark"]


def outcomes(session: Session, actor: Actor, filt: CaseFilter) -> pd.DataFrame:
    """Mix of diagnosis outcomes and of plan changes among cases of the cohort whose
    outcome is recorded, each share with its 95 % Wilson interval."""
    import pandas as pd  # lazily: the exports share this package without it

    conds = filt.case_conditions(actor, Action.VIEW_ANALYTICS, with_state=False)
    out = []
    for kind, column, members in (
        ("diagnosis", Case.outcome_diagnosis, list(OutcomeDiagnosis)),
        ("plan", Case.outcome_plan, list(OutcomePlan)),
    ):
        rows = session.exec(
            select(column.label("category"), func.count().label("n"))
            .where(*conds, column.is_not(None))
            .group_by(column)
        ).all()
        counts = {r.category: int(r.n) for r in rows}
        total = sum(counts.values())
        for member in members:
            k = counts.get(member.value, 0)
            lo, hi = wilson_interval(k, total)
            out.append({
                "kind": kind,
                "category": member.value,
                "label": member.value.replace("_", " ").capitalize(),
                "cases": k,
                "total": total,
                "share": k / total if total else None,
                "ci_low": lo if total else None,
                "ci_high": hi if total else None,
                "benchmark": BENCHMARK.get(member.value) if kind == "diagnosis" else None,
            })
    return pd.DataFrame(out, columns=OUTCOME_COLUMNS)


OPINION_THRESHOLDS = (30, 45, 60)


def time_to_opinion(session: Session, actor: Actor, filt: CaseFilter) -> pd.DataFrame:
    """Per UTC month in which cases were first seen: how many were seen, and the share
    seen within 30, 45 and 60 days of the diagnosing biopsy. Cases without a biopsy
    date cannot be placed and are left out."""
    import pandas as pd  # lazily: the exports share this package without it

    dialect = session.get_bind().dialect
    seen = (
        select(CaseEvent.case_id, func.min(CaseEvent.at).label("seen_at"))
        .where(CaseEvent.to_state == CaseState.SEEN.value)
        .group_by(CaseEvent.case_id)
        .subquery("seen")
    )
    days = days_from_date_to_day_of(Case.biopsy_date, seen.c.seen_at, dialect)
    per_case = (
        select(month_of(seen.c.seen_at, dialect).label("month"), days.label("days"))
        .join(seen, seen.c.case_id == Case.id)
        .where(*filt.case_conditions(actor, Action.VIEW_ANALYTICS, with_state=False),
               Case.biopsy_date.is_not(None))
        .subquery("pc")
    )
    within = [
        func.sum(case((per_case.c.days <= t, 1), else_=0)).label(f"within_{t}")
        for t in OPINION_THRESHOLDS
    ]
    rows = session.exec(
        select(per_case.c.month, func.count().label("seen"), *within)
        .group_by(per_case.c.month)
        .order_by(per_case.c.month)
    ).all()
    out = []
    for r in rows:
        row = {"month": r.month, "seen": int(r.seen)}
        for t in OPINION_THRESHOLDS:
            k = int(getattr(r, f"within_{t}") or 0)
            row[f"within_{t}"] = k
            row[f"share_{t}"] = k / row["seen"] if row["seen"] else None
        out.append(row)
    cols = ["month", "seen"] + [f"{p}_{t}" for t in OPINION_THRESHOLDS
                                for p in ("within", "share")]
    return pd.DataFrame(out, columns=cols)


def crossing_soon(
    session: Session, actor: Actor, filt: CaseFilter, *, now: datetime,
    threshold_days: int = 45, horizon_days: int = 7, tz: tzinfo = UTC, limit: int = 200,
) -> pd.DataFrame:
    """Open cases not yet seen whose patient clock (days since biopsy) will reach
    `threshold_days` within the next `horizon_days`: the ones to push this week.
    The period does not apply (this is about today)."""
    import pandas as pd  # lazily: the exports share this package without it

    today = now.astimezone(tz).date()
    earliest = today - timedelta(days=threshold_days - 1)  # still under the threshold today
    latest = today - timedelta(days=threshold_days - horizon_days)  # crosses by today+horizon
    not_yet_seen = [s.value for s in (CaseState.ASSESSED, CaseState.REFERRAL,
                                      CaseState.RECORDS_REQUESTED, CaseState.RECORDS_RECEIVED,
                                      CaseState.SCHEDULED)]
    rows = session.exec(
        select(Case.id.label("case_id"), Case.state, Case.biopsy_date,
               func.coalesce(User.full_name, "Unassigned").label("coordinator"),
               Case.appointment_at)
        .join(User, User.id == Case.assignee_id, isouter=True)
        .where(*filt.case_conditions(actor, Action.VIEW_ANALYTICS, with_period=False,
                                     with_state=False),
               Case.state.in_(not_yet_seen),
               Case.biopsy_date >= earliest, Case.biopsy_date <= latest)
        .order_by(Case.biopsy_date, Case.id)
        .limit(limit)
    ).all()
    out = []
    for r in rows:
        biopsy: date = r.biopsy_date
        out.append({
            "case_id": r.case_id, "state": r.state, "coordinator": r.coordinator,
            "days_since_biopsy": (today - biopsy).days,
            "crosses_on": biopsy + timedelta(days=threshold_days),
            "appointment_at": r.appointment_at,
        })
    return pd.DataFrame(out, columns=["case_id", "state", "coordinator", "days_since_biopsy",
                                      "crosses_on", "appointment_at"])
