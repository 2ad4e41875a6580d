"""The health dashboard: knowledge health over time, a scorecard per vendor, and the stored
eval runs (a trend per metric, two runs compared). Who may see it is the API's rule for
``GET /v1/health/knowledge`` (the ``health`` action)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlmodel import col, select

from api.console.base import ConsoleRoute, page, render
from api.console.charts import bar_chart, line_chart
from api.deps import ClockDep, SessionDep
from evals.store import compare, list_runs
from evals.trends import OUTCOMES, eval_trends, trends
from kb.models import EvalRun
from kb.permissions import Actor

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)
HealthReader = Annotated[Actor, Depends(page("health"))]
LABEL = {"answered": "answered", "escalate": "escalated", "no_answer": "no answer"}


@router.get("/health")
def dashboard(request: Request, caller: HealthReader, session: SessionDep, clock: ClockDep,
              days: Annotated[int, Query(ge=7, le=120)] = 28,
              a: str = "", b: str = "") -> Response:
    t = trends(session, now=clock(), days=days, group_gaps=request.app.state.assistant.gaps)
    for s in t.outcomes:
        s.name = LABEL[s.name]
    charts = [
        line_chart("outcomes", "Outcomes: share of assist calls per day", t.outcomes, unit="%"),
        line_chart("volume", "Assist calls per day", t.volume, unit="calls"),
        line_chart("freshness", "Freshness: served articles within their review cadence",
                   t.freshness, unit="%"),
        bar_chart("overdue", "Overdue articles by owner, today", t.overdue_by_owner,
                  unit="articles", label="Owner"),
        line_chart("flags-open", "Open flags at the end of each day", t.flags_open,
                   unit="flags"),
        line_chart("flags-resolve", "Median time to resolve a flag, by week resolved",
                   t.flags_resolve_hours, unit="hours"),
        line_chart("approval-lag", "Approval lag: median from new version to approval, "
                   "by week approved", t.approval_lag_hours, unit="hours"),
        bar_chart("gaps", "Content gaps by size: unanswered questions", t.gaps,
                  unit="questions", label="Question (normalised)"),
        bar_chart("citations", "Citations per article (most cited)", t.citations[:12],
                  unit="citations", label="Article"),
    ]
    vendors = []
    for audience, v in t.vendors.items():
        for s in v["series"]:
            s.name = LABEL[s.name]
        vendors.append({"audience": audience, **v,
                        "chart": line_chart(f"vendor-{audience.split(':', 1)[1]}",
                                            f"{audience}: outcomes by week",
                                            v["series"], unit="%")})
    suites = eval_trends(session)
    eval_charts = [line_chart(f"eval-{n}", f"Eval suite {suite}: metrics per run", series,
                              unit="share")
                   for n, (suite, series) in enumerate(sorted(suites.items()))]
    runs = list(list_runs(session, limit=50))
    comparison = None
    if a and b:
        ra = session.exec(select(EvalRun).where(col(EvalRun.id) == a)).first()
        rb = session.exec(select(EvalRun).where(col(EvalRun.id) == b)).first()
        if ra is not None and rb is not None:
            comparison = {"a": ra, "b": rb, "result": compare(ra, rb)}
    return render(request, "health.html", nav="health", t=t, charts=charts, vendors=vendors,
                  eval_charts=eval_charts, runs=runs, comparison=comparison, days=days,
                  outcomes=OUTCOMES, label=LABEL, a=a, b=b)
