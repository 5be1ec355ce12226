"""The monitor's page: one self-contained HTML file saying whether a deployed model drifted.

Built from `keras_app.evaluation.monitoring.Monitored` (read by attribute, so this room
needs nothing above it): the verdict first, then each check against its documented
limit, the reference, and per-day figures (studies, positive rate, score distribution,
not-analysed rate, latency). Figures are embedded PNGs, the style inline, no script and
a Content-Security-Policy that forbids any request: it opens offline, anywhere.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from keras_app.core.files import write_text_atomic
from keras_app.reports.card_blocks import Section
from keras_app.reports.model_card import STYLE, render_block
from keras_app.reports.plots import new_figure, save

PAGE = "monitor.html"
ALERT_STYLE = ".alert{background:#f8d7da;border:1px solid #c66;padding:.6em}"
QUIET_STYLE = ".quiet{background:#d7f0dc;border:1px solid #6a6;padding:.6em}"


# --- figures -------------------------------------------------------------------------------------


def _days(found) -> np.ndarray:
    """Positions 0..n-1, one per day with data (a gap-free axis)."""
    return np.arange(len(found.days))


def _few_ticks(ax, found):
    """At most ten ticks, each labelled with its day."""
    step = max(1, -(-len(found.days) // 10))
    ticks = np.arange(0, len(found.days), step)
    ax.set_xticks(ticks, [found.days[i]["day"] for i in ticks])
    ax.set_xlim(-0.6, len(found.days) - 0.4)


def studies_figure(found):
    fig = new_figure(8, 2.8)
    ax = fig.subplots()
    ax.bar(_days(found), [row["studies"] for row in found.days], color="#4878a8")
    ax.set(title="Studies per day", xlabel="day (UTC)", ylabel="studies")
    _few_ticks(ax, found)
    fig.autofmt_xdate()
    return fig


def positive_rate_figure(found):
    ref = found.reference
    fig = new_figure(8, 2.8)
    ax = fig.subplots()
    rates = [np.nan if r["positive_rate"] is None else r["positive_rate"] for r in found.days]
    ax.plot(_days(found), rates, "o-", label="called positive")
    ax.axhline(ref.positive_rate, color="k", ls="--", label=f"reference ({ref.split})")
    if ref.prevalence is not None:
        ax.axhline(ref.prevalence, color="grey", ls=":", label="reference prevalence")
    ax.set(title="Positive rate per day", xlabel="day (UTC)", ylabel="share", ylim=(0, 1))
    ax.legend(fontsize=8)
    _few_ticks(ax, found)
    fig.autofmt_xdate()
    return fig


def scores_figure(found):
    fig = new_figure(8, 3)
    ax = fig.subplots()
    bins = np.linspace(0, 1, 21)
    ax.hist(found.reference.scores, bins, density=True, alpha=0.5, label="reference")
    if len(found.window_scores):
        ax.hist(found.window_scores, bins, density=True, alpha=0.5, label="judged window")
    threshold = found.reference.operating_point.threshold
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3f}")
    positive = found.reference.operating_point.positive_class
    ax.set(title="Score distribution", xlabel=f"calibrated P({positive})", ylabel="density")
    ax.legend(fontsize=8)
    return fig


def operations_figure(found):
    fig = new_figure(8, 2.8)
    left, right = fig.subplots(1, 2)
    days = _days(found)
    left.plot(days, [r["not_analysed_rate"] for r in found.days], "o-", color="#a84848")
    title = "Not analysed per day"
    if found.reference.operating_point.refer_limits is not None:
        refer = [np.nan if r.get("refer_rate") is None else r["refer_rate"] for r in found.days]
        left.plot(days, refer, "s-", color="#c08a2a")
        left.legend(["not analysed", "referred (of the analysed)"], fontsize=8)
        title = "Not analysed and referred per day"
    left.set(title=title, xlabel="day (UTC)", ylabel="share", ylim=(0, 1))
    for key, label in (("latency_p50", "p50"), ("latency_p95", "p95")):
        values = [np.nan if r[key] is None else r[key] for r in found.days]
        right.plot(days, values, "o-", label=label)
    right.set(title="Latency per image", xlabel="day (UTC)", ylabel="ms")
    right.legend(fontsize=8)
    _few_ticks(left, found)
    _few_ticks(right, found)
    fig.autofmt_xdate()
    return fig


FIGURES = (
    ("studies.png", studies_figure, "Studies per day (distinct hashed study UIDs)."),
    (
        "positive_rate.png",
        positive_rate_figure,
        "Share of analysed images called positive per day, against the reference's share "
        "at the same threshold and its prevalence.",
    ),
    (
        "scores.png",
        scores_figure,
        "Calibrated scores of the judged window against the reference's (PSI and KS above).",
    ),
    (
        "operations.png",
        operations_figure,
        "Not-analysed share (and, with a refer band, the referred share of the analysed) and "
        "latency percentiles per day.",
    ),
)


# --- the page ------------------------------------------------------------------------------------


def sections(found, figures: Path) -> list[Section]:
    ref = found.reference
    checks = Section("Checks").table(
        ["check", "value", "limit", "status", "here", "why this limit"],
        [
            [
                c.limit.name,
                "-" if c.value is None else f"{c.value:.4g}",
                f"{c.limit.value:g}",
                "ALERT" if c.alert else "ok" if c.value is not None else "not judged",
                c.note,
                c.limit.why,
            ]
            for c in found.checks
        ],
    )
    op = ref.operating_point
    reference = Section("Reference").kv(
        [
            ("run", ref.run),
            ("operating point version", ref.version),
            ("decision", op.describe()),
            ("reference images", f"{ref.n} ({ref.split})"),
            ("reference positive rate", f"{ref.positive_rate:.3f}"),
            ("reference prevalence", "-" if ref.prevalence is None else f"{ref.prevalence:.3f}"),
        ]
    )
    usage = Section("Usage").kv(
        [
            ("judged window", f"{found.window[0]} to {found.window[1]} (UTC)"),
            ("lines read", found.totals.get("read")),
            ("lines of this version", found.totals.get("judged")),
            ("lines in the window", found.totals.get("window")),
            (
                "left out",
                ", ".join(f"{k}: {v}" for k, v in found.left_out.items()) or "none",
            ),
        ]
    )
    usage.table(
        ["day", "studies", "images", "analysed", "positive rate", "PSI", "KS D", "p95 ms"],
        [
            [
                r["day"],
                r["studies"],
                r["images"],
                r["analysed"],
                _fmt(r["positive_rate"]),
                _fmt(r["psi"]),
                _fmt(r["ks_statistic"]),
                _fmt(r["latency_p95"], ".0f"),
            ]
            for r in found.days
        ],
    )
    charts = Section("Per day")
    for name, _, caption in FIGURES:
        charts.img(figures / name, caption)
    return [checks, reference, usage, charts]


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def verdict(found) -> str:
    if found.alerts:
        names = ", ".join(c.limit.name for c in found.alerts)
        return f'<p class="alert"><strong>ALERT</strong>: {html.escape(names)} past the limit.</p>'
    return '<p class="quiet"><strong>Quiet</strong>: every check within its limit.</p>'


def write_monitor_page(found, out: Path) -> Path:
    """Writes OUT/monitor.html (and the figures it embeds, under OUT/figures/)."""
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for name, draw, _ in FIGURES:
        save(draw(found), figures / name)
    title = f"Monitor: {Path(found.reference.run).name}, operating point v{found.reference.version}"
    body = [f"<h1>{html.escape(title)}</h1>", verdict(found)]
    body.append(
        '<p class="warning"><strong>Not for diagnostic use.</strong> Computed from the '
        "usage log, which holds no patient data: hashed UIDs, scores, decisions, latency.</p>"
    )
    for section in sections(found, figures):
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [render_block(kind, payload) for kind, payload in section.blocks]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{html.escape(title)}</title>"
        f"<style>{STYLE}{ALERT_STYLE}{QUIET_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    write_text_atomic(out / PAGE, page)
    return out / PAGE
