"""Read models for the manager's analytics pages (issue 6). Pure SQL: every count,
median and percentile is computed by the database, restricted to the actor's team inside
the query (`permissions.team_filter`); Python only shapes the few result rows."""

from core.analytics.filters import CaseFilter
from core.analytics.funnel import closed_by_reason, funnel, pipeline
from core.analytics.outcomes import (
    BENCHMARK,
    BENCHMARK_LABEL,
    crossing_soon,
    outcomes,
    time_to_opinion,
)
from core.analytics.stage_times import SPLITS, stage_times
from core.analytics.workload import reassign_candidates, reassign_targets, workload

__all__ = [
    "BENCHMARK", "BENCHMARK_LABEL", "SPLITS", "CaseFilter", "closed_by_reason", "crossing_soon",
    "funnel", "outcomes", "pipeline", "reassign_candidates", "reassign_targets", "stage_times",
    "time_to_opinion", "workload",
]
