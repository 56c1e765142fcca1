"""The demo's PNG, the panels of the dashboard: requests per minute stacked by result type, the cache hit ratio,
the error rates (5xx, 4xx, the Error result type) and the latency (time-taken p50/p90/p99, time to first byte)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from job.core.metrics import OTHER_RESULT_TYPE
from job.demo.readback import DistributionMetrics

# Stacking order, bottom first: the bulk at the bottom, the rare failures on top where a thin band still shows.
STACK: dict[str, str] = {
    "Hit": "#4caf50",
    "RefreshHit": "#a5d6a7",
    "Miss": "#42a5f5",
    "Redirect": "#b0bec5",
    "Error": "#e53935",
    "LimitExceeded": "#ff9800",
    "CapacityExceeded": "#8e24aa",
    "LambdaExecutionError": "#6d4c41",
    OTHER_RESULT_TYPE: "#212121",
}
LINES = {"p50": "#1e88e5", "p90": "#fb8c00", "p99": "#d81b60"}
ERRORS = {"5xx": "#c62828", "4xx": "#f9a825", "Error": "#6a1b9a"}
# Rates of a few requests a minute jump between 0 and 100 %: the ratio panels sum numerator and denominator over
# a trailing window (as a dashboard at a 10-minute period would).
WINDOW_MINUTES = 10
Series = dict[datetime, float]


def windowed_percent(parts: list[Series], totals: list[Series], minutes: list[datetime]) -> list[float]:
    """100 * sum(parts) / sum(totals) over the trailing WINDOW_MINUTES of each minute; NaN where there is nothing."""
    values = []
    for index in range(len(minutes)):
        window = minutes[max(0, index - WINDOW_MINUTES + 1) : index + 1]
        part = sum(series.get(m, 0.0) for series in parts for m in window)
        total = sum(series.get(m, 0.0) for series in totals for m in window)
        values.append(100.0 * part / total if total else float("nan"))
    return values


def write_chart(
    metrics: dict[str, DistributionMetrics],
    path: Path,
    span: tuple[datetime, datetime],
    midnight: datetime,
    late: tuple[str, datetime],
) -> Path:
    """One column per distribution over the minutes of `span` [first, end): stacked requests on top, then the hit
    ratio, the error rates and the latency (log scale); a dashed line at `midnight`, the hour of the `late`
    (distribution, hour) shaded. The ratios are those the dashboard computes (docs/DEPLOY.md, section 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    columns = len(metrics)
    figure, axes = plt.subplots(
        4, columns, figsize=(6.5 * columns, 13), sharex="col", squeeze=False,
        gridspec_kw={"height_ratios": [3, 1.6, 1.6, 2.2]},
    )  # fmt: skip
    for column, (distribution_id, m) in enumerate(metrics.items()):
        top, ratio, errors, latency = (axes[row][column] for row in range(4))
        # Every minute of the span, zero where CloudWatch has none, so stacks line up and gaps show as gaps.
        minutes = [span[0] + timedelta(minutes=i) for i in range(int((span[1] - span[0]).total_seconds() // 60))]
        types = [t for t in STACK if t in m.by_type] + sorted(t for t in m.by_type if t not in STACK)
        stacks = [[m.by_type[t].get(minute, 0.0) for minute in minutes] for t in types]
        top.stackplot(minutes, stacks, labels=types, colors=[STACK.get(t, "#757575") for t in types], linewidth=0)
        top.set_title(f"{distribution_id}: {m.total():,} requests", fontsize=11)
        top.set_ylabel("requests per minute")
        top.set_ylim(bottom=0)
        hits = [m.by_type.get(t, {}) for t in ("Hit", "RefreshHit")]
        ratio.plot(minutes, windowed_percent(hits, [*hits, m.by_type.get("Miss", {})], minutes),
                   color="#2e7d32", linewidth=1.1, label="hit ratio")  # fmt: skip
        ratio.set_ylim(0, 100)
        ratio.set_ylabel(f"cache hit ratio, %\n({WINDOW_MINUTES}-min window)", fontsize=9)
        for name, colour in ERRORS.items():
            part = m.by_status.get(name, {}) if name != "Error" else m.by_type.get("Error", {})
            errors.plot(minutes, windowed_percent([part], [m.requests], minutes), color=colour, linewidth=1.0,
                        label=f"{name} ({round(sum(part.values())):,})")  # fmt: skip
        errors.set_ylim(bottom=0)
        errors.set_ylabel(f"error rate, % of requests\n({WINDOW_MINUTES}-min window)", fontsize=9)
        errors.legend(loc="upper right", fontsize=7, ncol=3, frameon=False)
        for name, colour in LINES.items():
            series = m.percentiles.get(name, {})
            xs = [minute for minute in minutes if minute in series]
            latency.plot(xs, [series[x] for x in xs], color=colour, linewidth=0.9, label=f"time-taken {name}")
        xs = [minute for minute in minutes if minute in m.ttfb_mean]
        latency.plot(xs, [m.ttfb_mean[x] for x in xs], color="#00897b", linewidth=0.9, linestyle="--",
                     label="first byte, mean")  # fmt: skip
        latency.set_yscale("log")
        latency.set_ylabel("ms (log scale)")
        latency.set_xlabel(f"UTC, {midnight - timedelta(days=1):%Y-%m-%d} to {midnight:%Y-%m-%d}")
        for ax in (top, ratio, errors, latency):
            ax.axvline(midnight, color="#616161", linestyle="--", linewidth=0.8)
            ax.grid(True, which="major", color="#e0e0e0", linewidth=0.6)
            ax.set_axisbelow(True)
            ax.set_xlim(span[0], span[1] - timedelta(minutes=1))
        top.text(midnight, top.get_ylim()[1] * 0.98, f" {midnight:%b %d}", va="top", fontsize=8, color="#424242")
        if distribution_id == late[0]:
            top.axvspan(late[1], late[1] + timedelta(hours=1), color="#fff59d", alpha=0.5, zorder=0)
            top.text(late[1], top.get_ylim()[1] * 0.98, " + late file", va="top", fontsize=8, color="#424242")
        latency.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))  # type: ignore[no-untyped-call]
    # One legend for every column: a type seen in only one distribution (Other) still gets its entry.
    present = {t for m in metrics.values() for t in m.by_type}
    shown = [t for t in STACK if t in present] + sorted(present - set(STACK))
    handles = [Patch(color=STACK.get(t, "#757575"), label=t) for t in shown]
    figure.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, 0.97))
    line_handles, line_labels = axes[3][0].get_legend_handles_labels()
    axes[3][-1].legend(line_handles, line_labels, loc="lower right", fontsize=7, ncol=4, framealpha=0.9)
    figure.suptitle("CloudFront access logs -> CloudWatch, per minute, read back with GetMetricData", fontsize=13)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
