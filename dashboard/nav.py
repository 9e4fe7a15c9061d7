"""The page registry: every page of the dashboard, the group it sits in, and the action
(core.permissions.Action) a role needs to be offered it.

`app.py` registers only the pages `can(actor, spec.action)` allows, so a page a role may
not use is not in its sidebar; each page also calls `guard.require_page(action)` so that
reaching it anyway (a stale link, a URL typed by hand) is refused and audited.

To add a page: put the file in dashboard/pages/ and add one PageSpec line below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.actor import Actor
from core.permissions import Action, can


@dataclass(frozen=True)
class PageSpec:
    path: str  # relative to dashboard/ (the entry script's folder)
    title: str
    icon: str  # material icon, ":material/name:"
    group: str  # sidebar section
    action: Action
    default: bool = False  # the landing page after sign-in (first allowed one wins)


# Sidebar sections in display order.
GROUPS: tuple[str, ...] = ("Work", "Insight", "Admin")

PAGES: list[PageSpec] = [
    PageSpec("pages/my_day.py", "My day", ":material/today:", "Work", Action.VIEW_QUEUE,
             default=True),
    PageSpec("pages/case.py", "Case", ":material/folder_open:", "Work", Action.VIEW_CASE),
    PageSpec("pages/new_case.py", "New case", ":material/person_add:", "Work",
             Action.CREATE_CASE),
    # issue 6: analytics and exports pages register here (group "Insight").
    PageSpec("pages/insight_flow.py", "Funnel and pipeline", ":material/filter_alt:",
             "Insight", Action.VIEW_ANALYTICS),
    PageSpec("pages/insight_stage_times.py", "Stage times", ":material/timer:", "Insight",
             Action.VIEW_ANALYTICS),
    PageSpec("pages/insight_workload.py", "Workload", ":material/groups:", "Insight",
             Action.VIEW_ANALYTICS),
    PageSpec("pages/insight_outcomes.py", "Outcomes and time to opinion",
             ":material/fact_check:", "Insight", Action.VIEW_ANALYTICS),
    PageSpec("pages/exports.py", "Exports", ":material/download:", "Insight",
             Action.EXPORT_DEIDENTIFIED),
    PageSpec("pages/admin_users.py", "Users", ":material/group:", "Admin", Action.MANAGE_USERS),
    PageSpec("pages/admin_sla.py", "SLA limits", ":material/timer:", "Admin",
             Action.MANAGE_SLA),
    PageSpec("pages/audit_log.py", "Audit log", ":material/policy:", "Admin", Action.VIEW_AUDIT),
]


DASHBOARD_DIR = Path(__file__).resolve().parent


def pages_for(actor: Actor) -> list[PageSpec]:
    """The pages offered to `actor`, in registry order. A registered file that is not
    there (yet) is skipped rather than taking the whole app down."""
    return [spec for spec in PAGES
            if can(actor, spec.action) and (DASHBOARD_DIR / spec.path).is_file()]


def spec_for(path: str) -> PageSpec | None:
    for spec in PAGES:
        if spec.path == path:
            return spec
    return None
