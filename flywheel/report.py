"""The nightly report: one self-contained HTML page per day under ``reports/``.

The page needs no network to be viewed: every chart is an inline SVG drawn by matplotlib,
the styles are inline, and a short inline script records each chart's rendered size in
the page (``data-rendered``), which lets a headless browser confirm that the charts drew.
A chart whose table is absent or empty says "no data yet" instead.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from flywheel import pii, store
from flywheel.settings import Settings

# How many slices the slice-metrics chart follows, and how many days it looks back.
TOP_SLICES = 6
HISTORY_DAYS = 30


@dataclass
class Chart:
    """One chart of the report: its name, title, and the inline SVG or why there is none."""

    name: str
    title: str
    svg: str | None = None
    note: str = ""

    @property
    def has_data(self) -> bool:
        return self.svg is not None


@dataclass
class Report:
    """What :func:`write_report` wrote: the page, the day, its charts and headline numbers."""

    day: str
    path: Path
    charts: list[Chart] = field(default_factory=list)
    summary: dict[str, object] = field(default_factory=dict)

    def chart_status(self) -> dict[str, str]:
        """Return, per chart name, ``"chart"`` or ``"no data yet"``."""
        return {c.name: "chart" if c.has_data else "no data yet" for c in self.charts}


def report_path(settings: Settings, day: str) -> Path:
    """Return where the report of ``day`` is written: ``reports/YYYY-MM-DD.html``."""
    return settings.reports_dir / f"{dt.date.fromisoformat(day).isoformat()}.html"


def write_report(con: duckdb.DuckDBPyConnection, settings: Settings, day: str) -> Report:
    """Write the report of ``day`` (``YYYY-MM-DD``) from the tables and return a :class:`Report`.

    Only rows of that day and before are used, so rewriting an old day's report gives the
    page that night would have had (apart from the whole-history tables).
    """
    dt.date.fromisoformat(day)
    charts = [
        _slice_history(con, day),
        _worst_slices(con, day),
        _classifier_versions(con),
        _judge_alignment(con),
        _queue_progress(con, day),
        _prompt_evals(con),
    ]
    summary = _summary(con, day, settings)
    path = report_path(settings, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(_page(day, summary, charts), encoding="utf-8")
    tmp.replace(path)
    return Report(day=day, path=path, charts=charts, summary=summary)


# -- the data of each chart ------------------------------------------------------------


def _rows(con, table: str, sql: str, params: list | None = None) -> list[tuple]:
    """Return the rows of ``sql`` or [] when ``table`` does not exist (yet)."""
    if not store.table_exists(con, table):
        return []
    return con.execute(sql, params or []).fetchall()


def _slice_history(con, day: str) -> Chart:
    chart = Chart("slice_metrics_over_time", "Failure rate of the worst slices over time")
    first = (dt.date.fromisoformat(day) - dt.timedelta(days=HISTORY_DAYS - 1)).isoformat()
    followed = [
        (t, v) for t, v in _rows(con, "worst_slices", """
            SELECT slice_type, slice_value FROM worst_slices WHERE day = ?::DATE
            ORDER BY rank LIMIT ?""", [day, TOP_SLICES])
    ]
    if not followed:  # no significant slice that day: follow the largest ones
        followed = _rows(con, "slice_metrics", """
            SELECT slice_type, slice_value FROM slice_metrics
            WHERE day = ?::DATE AND failure_rate IS NOT NULL
            ORDER BY n DESC, slice_type, slice_value LIMIT ?""", [day, TOP_SLICES])
    if not followed:
        chart.note = "no data yet: slice_metrics has no rows for this day"
        return chart
    rows = _rows(con, "slice_metrics", """
        SELECT slice_type, slice_value, day, avg(failure_rate) FROM slice_metrics
        WHERE day BETWEEN ?::DATE AND ?::DATE AND failure_rate IS NOT NULL
          AND list_contains(?::VARCHAR[], slice_type || chr(31) || slice_value)
        GROUP BY ALL ORDER BY day""", [first, day, [f"{t}\x1f{v}" for t, v in followed]])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for slice_type, slice_value in followed:
        points = [(d, r) for t, v, d, r in rows if (t, v) == (slice_type, slice_value)]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                    label=_short(f"{slice_type}={slice_value}"))
    import matplotlib.dates as mdates

    ax.set_ylabel("failure rate")
    ax.yaxis.set_major_formatter(_percent())
    span = len({d for _, _, d, _ in rows})
    ax.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, span // 8)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.autofmt_xdate()
    chart.svg = _svg(fig, chart.name)
    chart.note = f"{len(followed)} slices, {first} to {day}"
    return chart


def _worst_slices(con, day: str) -> Chart:
    chart = Chart("worst_slices", "Worst slices of the day (with 95% intervals)")
    rows = _rows(con, "worst_slices", """
        SELECT slice_type || '=' || slice_value, failure_rate, coalesce(failure_low, failure_rate),
               coalesce(failure_high, failure_rate), rest_rate, q_value, failures, n_signal
        FROM worst_slices WHERE day = ?::DATE ORDER BY rank LIMIT 12""", [day])
    if not rows:
        chart.note = "no data yet: no significantly worse slice on this day (worst_slices is empty)"
        return chart
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    names = [_short(r[0]) for r in rows][::-1]
    rates = [r[1] for r in rows][::-1]
    low = [max(r[1] - r[2], 0) for r in rows][::-1]
    high = [max(r[3] - r[1], 0) for r in rows][::-1]
    ax.barh(names, rates, xerr=[low, high], height=0.5, color="#c0504d", alpha=0.85, label="slice")
    rest = [r[4] for r in rows][::-1]
    ax.scatter(rest, names, marker="|", s=300, color="#333333", label="rest of the traffic", zorder=3)
    ax.xaxis.set_major_formatter(_percent())
    ax.set_xlabel("failure rate")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    chart.svg = _svg(fig, chart.name)
    chart.note = "; ".join(f"{_short(r[0])}: {r[6]}/{r[7]} (q={r[5]:.2g})" for r in rows[:3])
    return chart


def _classifier_versions(con) -> Chart:
    chart = Chart("classifier_metrics", "Classifier metrics over model versions")
    rows = _rows(con, "models", """
        SELECT task, version, status, metrics::VARCHAR FROM models ORDER BY task, trained_at, version""")
    points: dict[str, list[tuple[str, str, dict]]] = {}
    for task, version, status, metrics in rows:
        values = _json(metrics)
        if values:
            points.setdefault(task, []).append((version, status, values))
    if not points:
        chart.note = "no data yet: no classifier trained (models is empty)"
        return chart
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(points), figsize=(4 * len(points) + 1, 3.4), squeeze=False)
    for ax, (task, versions) in zip(axes[0], sorted(points.items())):
        xs = range(len(versions))
        for metric in ("auroc", "ap", "f1", "ece"):
            ys = [_number(v[2].get(metric)) for v in versions]
            if any(y is not None for y in ys):
                ax.plot(list(xs), [float("nan") if y is None else y for y in ys], marker="o", label=metric)
        for i, (_version, status, _values) in enumerate(versions):
            if status == "champion":
                ax.axvline(i, color="#2e7d32", linestyle=":", linewidth=1)
        names = [v[0].removeprefix(f"{task}-") for v in versions]
        ax.set_xticks(list(xs), [_short(n, 18) for n in names], rotation=30, fontsize=7, ha="right")
        ax.set_xlim(-0.5, len(versions) - 0.5)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{task} (dotted: champion)", fontsize=9)
        ax.legend(fontsize=7)
    chart.svg = _svg(fig, chart.name)
    chart.note = ", ".join(f"{task}: {len(v)} versions" for task, v in sorted(points.items()))
    return chart


def _judge_alignment(con) -> Chart:
    chart = Chart("judge_alignment", "LLM judge alignment with the human labels (Cohen's kappa)")
    rows = _rows(con, "judge_alignment", """
        SELECT criterion, prompt_version, kappa, trusted, n FROM judge_alignment
        WHERE kappa IS NOT NULL ORDER BY criterion, evaluated_at""")
    if not rows:
        chart.note = "no data yet: no judge evaluated (judge_alignment is empty)"
        return chart
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.4))
    labels = [_short(f"{c} {v}", 28) for c, v, *_ in rows][::-1]
    kappas = [k for _, _, k, _, _ in rows][::-1]
    colors = ["#2e7d32" if t else "#9e9e9e" for *_, t, _ in rows][::-1]
    ax.barh(labels, kappas, color=colors)
    ax.set_xlim(min(0.0, min(kappas)), 1.0)
    ax.set_xlabel("kappa against the consensus (green: trusted)")
    chart.svg = _svg(fig, chart.name)
    chart.note = f"{sum(1 for r in rows if r[3])} of {len(rows)} judge versions trusted"
    return chart


def _queue_progress(con, day: str) -> Chart:
    chart = Chart("queue_progress", "Annotation queue: items queued and labelled per day")
    has_labels = store.table_exists(con, "annotations")
    labelled = ("count(*) FILTER (WHERE log_id IN (SELECT log_id FROM annotations))"
                if has_labels else "0")
    rows = _rows(con, "annotation_queue", f"""
        SELECT day, count(*), {labelled} FROM annotation_queue WHERE day <= ?::DATE
        GROUP BY day ORDER BY day DESC LIMIT ?""", [day, HISTORY_DAYS])[::-1]
    if not rows:
        chart.note = "no data yet: nothing queued (annotation_queue is empty)"
        return chart
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    days = [d.isoformat() for d, _, _ in rows]
    done = [n_done for _, _, n_done in rows]
    open_ = [n - n_done for _, n, n_done in rows]
    ax.bar(days, done, color="#2e7d32", label="labelled")
    ax.bar(days, open_, bottom=done, color="#90caf9", label="waiting")
    ax.set_ylabel("items")
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    chart.svg = _svg(fig, chart.name)
    chart.note = f"{sum(done)} of {sum(n for _, n, _ in rows)} queued items labelled"
    return chart


def _prompt_evals(con) -> Chart:
    chart = Chart("prompt_evals", "Prompt evaluations: champion against candidate")
    rows = _rows(con, "prompt_evals", """
        SELECT prompt_name, metric, champion_version, candidate_version, champion_score,
               candidate_score, p_value, promoted
        FROM prompt_evals WHERE champion_score IS NOT NULL OR candidate_score IS NOT NULL
        ORDER BY evaluated_at DESC LIMIT 12""")[::-1]
    if not rows:
        chart.note = "no data yet: no prompt evaluated (prompt_evals is empty)"
        return chart
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.4))
    labels = [_short(f"{name} {metric} {cand}", 34) for name, metric, _, cand, *_ in rows]
    ys = list(range(len(rows)))
    ax.barh([y + 0.2 for y in ys], [r[4] or 0 for r in rows], height=0.4, color="#9e9e9e", label="champion")
    ax.barh([y - 0.2 for y in ys], [r[5] or 0 for r in rows], height=0.4,
            color=["#2e7d32" if r[7] else "#ef6c00" for r in rows], label="candidate (green: promoted)")
    ax.set_yticks(ys, labels, fontsize=7)
    ax.set_xlabel("score")
    ax.legend(fontsize=7, loc="lower right")
    chart.svg = _svg(fig, chart.name)
    chart.note = f"{sum(1 for r in rows if r[7])} of {len(rows)} evaluations promoted the candidate"
    return chart


def _summary(con, day: str, settings: Settings | None = None) -> dict[str, object]:
    """Return the headline numbers of the day and of the loop (absent tables are left out),
    with whether each champion classifier's scores are trusted, and why not."""
    summary: dict[str, object] = {}
    one = lambda table, sql, params=None: (_rows(con, table, sql, params) or [(None,)])[0][0]  # noqa: E731
    summary["logs ingested"] = one("logs", "SELECT count(*) FROM logs WHERE day = ?::DATE", [day])
    summary["records rejected"] = one("rejected_logs", "SELECT count(*) FROM rejected_logs WHERE day = ?::DATE", [day])
    summary["repeated log ids"] = one("duplicate_logs", "SELECT count(*) FROM duplicate_logs WHERE day = ?::DATE", [day])
    summary["significantly worse slices"] = one("worst_slices", "SELECT count(*) FROM worst_slices WHERE day = ?::DATE", [day])
    summary["items queued for labelling"] = one("annotation_queue", "SELECT count(*) FROM annotation_queue WHERE day = ?::DATE", [day])
    summary["labels (all time)"] = one("annotations", "SELECT count(*) FROM annotations")
    champions = _rows(con, "models", "SELECT task || ' ' || version FROM models WHERE status = 'champion' ORDER BY task")
    summary["champion classifiers"] = ", ".join(c for (c,) in champions) or "none yet"
    trusted = _rows(con, "judge_alignment", "SELECT DISTINCT criterion FROM judge_alignment WHERE trusted ORDER BY 1")
    summary["trusted judges"] = ", ".join(c for (c,) in trusted) or "none yet"
    scored = one("log_scores", "SELECT count(*) FROM log_scores WHERE day = ?::DATE", [day])
    if scored is not None:
        summary["classifier scores (logs x tasks)"] = scored
        columns = {c for (c,) in _rows(con, "log_scores", "SELECT column_name FROM information_schema.columns "
                                                          "WHERE table_name = 'log_scores'")}
        if "trusted" in columns:
            summary["trusted classifier scores (used by slices and queue)"] = one(
                "log_scores", "SELECT count(*) FROM log_scores WHERE day = ?::DATE AND coalesce(trusted, true)", [day])
    if settings is not None and champions:
        from flywheel.classifiers.registry import champion_trust
        from flywheel.classifiers.trust import describe

        summary["classifier trust"] = "; ".join(
            line for task, version, trust in champion_trust(con, settings) for line in describe(task, version, trust))
    return {k: v for k, v in summary.items() if v is not None}


# -- drawing ---------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # text.parse_math off: slice names, prompt and model names are plain text, a `$` in
    # them is not the start of math text.
    plt.rcParams.update({"svg.fonttype": "none", "font.size": 8, "axes.spines.top": False,
                         "axes.spines.right": False, "text.parse_math": False})
    return plt


def _percent():
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


def _svg(fig, name: str) -> str:
    """Return the figure as an SVG element to inline (ids made unique per chart)."""
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = name  # stable ids, distinct between the page's charts
    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)  # RDF boilerplate
    return text[text.index("<svg"):]


def _short(text: str, width: int = 40) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _json(value) -> dict:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value) if value else {}
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# -- the page ---------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 60rem;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.1rem; margin: 0 0 .3rem; }
table.summary { border-collapse: collapse; margin-bottom: 1.5rem; }
table.summary td { padding: .2rem .8rem .2rem 0; border-bottom: 1px solid #eee; }
figure.chart { margin: 0 0 2rem; padding: 1rem; border: 1px solid #ddd; border-radius: 6px; }
figure.chart svg { max-width: 100%; height: auto; display: block; }
figure.chart .note { color: #666; font-size: .85rem; margin: .3rem 0 0; }
figure.nodata .note { font-style: italic; }
"""

# Records each chart's rendered size and drawn extent (0x0 when it did not draw).
_SCRIPT = """
document.querySelectorAll('figure.chart').forEach(function (figure) {
  var svg = figure.querySelector('svg');
  if (!svg) { figure.setAttribute('data-rendered', 'none'); return; }
  var box = svg.getBoundingClientRect(), drawn = svg.getBBox();
  figure.setAttribute('data-rendered', Math.round(box.width) + 'x' + Math.round(box.height));
  figure.setAttribute('data-drawn', Math.round(drawn.width) + 'x' + Math.round(drawn.height));
});
"""


def _redact_svg(svg: str) -> str:
    """The chart with PII replaced in its text nodes (labels are drawn as <text>)."""
    return re.sub(r">([^<>]+)<", lambda m: ">" + pii.scan(m.group(1))[0] + "<", svg)


def _text(value: object) -> str:
    """HTML of a text of the page, its personal data and secrets replaced (PII guardrail:
    names of slices and criteria come from the data)."""
    return html.escape(pii.scan(str(value))[0])


def _page(day: str, summary: dict[str, object], charts: list[Chart]) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(str(k))}</td><td><b>{_text(v)}</b></td></tr>" for k, v in summary.items()
    )
    figures = []
    for chart in charts:
        body = _redact_svg(chart.svg) if chart.svg is not None else ""
        css = "chart" if chart.has_data else "chart nodata"
        figures.append(
            f'<figure class="{css}" id="{chart.name}" data-chart="{chart.name}">\n'
            f"<h2>{_text(chart.title)}</h2>\n{body}\n"
            f'<p class="note">{_text(chart.note)}</p>\n</figure>'
        )
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flywheel report {html.escape(day)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>flywheel report for {html.escape(day)}</h1>
<p>Generated {generated}. Every chart is drawn from the flywheel tables; the page needs no network.</p>
<table class="summary">
{rows}
</table>
{chr(10).join(figures)}
<script>{_SCRIPT}</script>
</body></html>
"""


def chart_names() -> list[str]:
    """Return the names of the report's charts, in page order."""
    return ["slice_metrics_over_time", "worst_slices", "classifier_metrics", "judge_alignment",
            "queue_progress", "prompt_evals"]


def rendered_sizes(dom: str) -> dict[str, tuple[str, str]]:
    """Return, per chart, the (rendered, drawn) sizes a browser wrote into the page's DOM."""
    sizes = {}
    for match in re.finditer(r"<figure\b[^>]*>", dom):
        tag = match.group(0)
        name = re.search(r'data-chart="([^"]+)"', tag)
        if name:
            rendered = re.search(r'data-rendered="([^"]+)"', tag)
            drawn = re.search(r'data-drawn="([^"]+)"', tag)
            sizes[name.group(1)] = (rendered.group(1) if rendered else "", drawn.group(1) if drawn else "")
    return sizes
