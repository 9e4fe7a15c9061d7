"""Charts for the analytics pages: a DataFrame from core.analytics in, a plotly Figure out.
No data access here, and no Streamlit: the pages decide what to show.

Plotly renders a few HTML tags inside text (<b>, <br>, <a href>), so every label that can
come from users (names, insurers, facilities, team names) is HTML-escaped first: a
coordinator called "<a href=...>" shows as typed, never as a link.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

BLUE, RED, ORANGE, GREY, GREEN = "#1f5fa8", "#c0392b", "#e67e22", "#95a5a6", "#27ae60"
SERIES = ["#1f5fa8", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"]


def plain(value: object) -> str:
    """A user-supplied label made inert for plotly's HTML-ish text rendering."""
    return html.escape("" if value is None else str(value), quote=True)


def _layout(fig: go.Figure, title: str, **kw) -> go.Figure:
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.15), **kw)
    return fig


def _empty(title: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text="No data for this selection", showarrow=False,
                       x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title)


def funnel(df: pd.DataFrame) -> go.Figure:
    """Cases of the cohort reaching each state, with conversion from the step before."""
    title = "Funnel: cases of the cohort reaching each state"
    if df.empty or int(df["reached"].iloc[0]) == 0:
        return _empty(title)
    conv = ["" if pd.isna(c) else f"{c:.0%} of previous" for c in df["conversion"]]
    fig = go.Figure(go.Funnel(
        y=[plain(v) for v in df["label"]], x=df["reached"].tolist(),
        text=[f"{n:,} · {c}" if c else f"{n:,}" for n, c in zip(df["reached"], conv,
                                                                strict=True)],
        textinfo="text", marker=dict(color=BLUE),
        hovertemplate="%{y}: %{x:,} cases<extra></extra>",
    ))
    return _layout(fig, title)


def pipeline(df: pd.DataFrame) -> go.Figure:
    """Open cases per state now, the stalled part in red."""
    title = "Pipeline now: open cases per state"
    if df.empty or int(df["open"].sum()) == 0:
        return _empty(title)
    labels = [plain(v) for v in df["label"]]
    fig = go.Figure([
        go.Bar(name="On track", x=labels, y=(df["open"] - df["stalled"]).tolist(),
               marker_color=BLUE),
        go.Bar(name="Stalled", x=labels, y=df["stalled"].tolist(), marker_color=RED),
    ])
    return _layout(fig, title, barmode="stack", yaxis_title="cases")


def closed_by_reason(df: pd.DataFrame) -> go.Figure:
    title = "Closed cases of the cohort, by reason"
    if df.empty:
        return _empty(title)
    fig = go.Figure(go.Bar(x=df["cases"].tolist(), y=[plain(v) for v in df["label"]],
                           orientation="h", marker_color=GREY))
    return _layout(fig, title, yaxis=dict(autorange="reversed"), xaxis_title="cases")


def stage_times(df: pd.DataFrame, *, by: str | None) -> go.Figure:
    """Median (bar) and 90th percentile (tick) per state, the SLA limit as a red line.
    With a split, one coloured bar per group."""
    title = "Days spent in each state: median (bar) and 90th percentile (◆)"
    if df.empty:
        return _empty(title)
    fig = go.Figure()
    states = list(dict.fromkeys(df["label"]))
    if by is None:
        fig.add_bar(name="Median", x=[plain(s) for s in df["label"]],
                    y=df["median_days"].tolist(), marker_color=BLUE,
                    customdata=df["n"].tolist(),
                    hovertemplate="%{x}: median %{y:.1f} d (n=%{customdata})<extra></extra>")
        fig.add_scatter(name="90th percentile", x=[plain(s) for s in df["label"]],
                        y=df["p90_days"].tolist(), mode="markers",
                        marker=dict(symbol="diamond", size=11, color=ORANGE))
    else:
        for i, (group, part) in enumerate(df.groupby("group", sort=True)):
            colour = SERIES[i % len(SERIES)]
            name = plain(group)
            fig.add_bar(name=name, x=[plain(s) for s in part["label"]],
                        y=part["median_days"].tolist(), marker_color=colour,
                        offsetgroup=name, legendgroup=name, customdata=part["n"].tolist(),
                        hovertemplate=name + " · %{x}: median %{y:.1f} d (n=%{customdata})"
                        "<extra></extra>")
            fig.add_scatter(name=f"{name} p90", x=[plain(s) for s in part["label"]],
                            y=part["p90_days"].tolist(), mode="markers", offsetgroup=name,
                            legendgroup=name, showlegend=False,
                            marker=dict(symbol="diamond", size=9, color=colour,
                                        line=dict(color="white", width=1)))
    _add_sla(fig, df, states)
    return _layout(fig, title, barmode="group", yaxis_title="days",
                   scattermode="group" if by else None)


def _add_sla(fig: go.Figure, df: pd.DataFrame, states: list[str]) -> None:
    limits = df.drop_duplicates("label").set_index("label")["sla_days"]
    xs, ys = [], []
    for s in states:
        if pd.notna(limits.get(s)):
            xs.append(plain(s))
            ys.append(float(limits[s]))
    if xs:
        fig.add_scatter(name="SLA limit", x=xs, y=ys, mode="markers",
                        marker=dict(symbol="line-ew", size=40, color=RED,
                                    line=dict(width=3, color=RED)),
                        hovertemplate="%{x}: limit %{y} d<extra></extra>")


def stage_trend(df: pd.DataFrame, state_label: str) -> go.Figure:
    """One state by month: median and 90th percentile lines, the SLA limit as a line."""
    title = f"{plain(state_label)}: days in state by month (month the case moved on)"
    part = df[df["label"] == state_label]
    if part.empty:
        return _empty(title)
    months = [plain(m) for m in part["group"]]
    fig = go.Figure([
        go.Scatter(name="Median", x=months, y=part["median_days"].tolist(),
                   mode="lines+markers", line=dict(color=BLUE)),
        go.Scatter(name="90th percentile", x=months, y=part["p90_days"].tolist(),
                   mode="lines+markers", line=dict(color=ORANGE, dash="dot")),
    ])
    limit = part["sla_days"].dropna()
    if not limit.empty:
        fig.add_hline(y=float(limit.iloc[0]), line_color=RED, line_dash="dash",
                      annotation_text=f"SLA limit {int(limit.iloc[0])} d")
    return _layout(fig, title, yaxis_title="days", xaxis_type="category")


def workload(df: pd.DataFrame) -> go.Figure:
    title = "Open cases per coordinator"
    if df.empty or int(df["open"].sum()) == 0:
        return _empty(title)
    names = [plain(v) for v in df["coordinator"]]
    fig = go.Figure([
        go.Bar(name="Open", y=names, x=df["open"].tolist(), orientation="h",
               marker_color=BLUE),
        go.Bar(name="Stalled", y=names, x=df["stalled"].tolist(), orientation="h",
               marker_color=RED),
        go.Bar(name="At risk", y=names, x=df["at_risk"].tolist(), orientation="h",
               marker_color=ORANGE),
    ])
    return _layout(fig, title, barmode="group", yaxis=dict(autorange="reversed"),
                   height=max(300, 60 * len(df)))


def outcomes(df: pd.DataFrame, *, kind: str, benchmark_label: str | None = None) -> go.Figure:
    """Shares with 95 % Wilson intervals; for diagnoses, the benchmark as ◆ markers."""
    part = df[df["kind"] == kind]
    total = int(part["total"].iloc[0]) if not part.empty else 0
    what = "Diagnosis after the second opinion" if kind == "diagnosis" else "Treatment plan"
    title = f"{what} (n = {total:,}, 95% confidence intervals)"
    if total == 0:
        return _empty(title)
    share = part["share"].astype(float)
    fig = go.Figure(go.Bar(
        name="This service", x=[plain(v) for v in part["label"]], y=share.tolist(),
        marker_color=BLUE,
        error_y=dict(type="data", symmetric=False,
                     array=(part["ci_high"].astype(float) - share).tolist(),
                     arrayminus=(share - part["ci_low"].astype(float)).tolist()),
        customdata=part["cases"].tolist(),
        hovertemplate="%{x}: %{y:.0%} (%{customdata} cases)<extra></extra>",
    ))
    if benchmark_label and part["benchmark"].notna().any():
        bench = part[part["benchmark"].notna()]
        fig.add_scatter(name=benchmark_label, x=[plain(v) for v in bench["label"]],
                        y=bench["benchmark"].astype(float).tolist(), mode="markers",
                        marker=dict(symbol="diamond", size=14, color=ORANGE))
    return _layout(fig, title, yaxis=dict(tickformat=".0%", range=[0, 1]))


def time_to_opinion(df: pd.DataFrame) -> go.Figure:
    title = "Share of patients seen within 30, 45 and 60 days of biopsy (by month seen)"
    if df.empty:
        return _empty(title)
    months = [plain(m) for m in df["month"]]
    fig = go.Figure()
    for days, colour in ((30, GREEN), (45, ORANGE), (60, RED)):
        fig.add_scatter(name=f"within {days} days", x=months,
                        y=df[f"share_{days}"].astype(float).tolist(), mode="lines+markers",
                        line=dict(color=colour), customdata=df["seen"].tolist(),
                        hovertemplate="%{x}: %{y:.0%} of %{customdata} seen<extra></extra>")
    return _layout(fig, title, yaxis=dict(tickformat=".0%", range=[0, 1.05]),
                   xaxis_type="category")
