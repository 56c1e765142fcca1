"""The demo's PNG: requests per minute stacked by result type, and time-taken p50/p90/p99 per minute."""

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


def write_chart(
    metrics: dict[str, DistributionMetrics],
    path: Path,
    span: tuple[datetime, datetime],
    midnight: datetime,
    late: tuple[str, datetime],
) -> Path:
    """One column per distribution over the minutes of `span` [first, end): stacked requests on top, time-taken
    percentiles (log scale) below; a dashed line at `midnight`, the hour of the `late` (distribution, hour) shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    columns = len(metrics)
    figure, axes = plt.subplots(
        2, columns, figsize=(6 * columns, 8), sharex="col", squeeze=False, gridspec_kw={"height_ratios": [3, 2]}
    )
    for column, (distribution_id, m) in enumerate(metrics.items()):
        top, bottom = axes[0][column], axes[1][column]
        # Every minute of the span, zero where CloudWatch has none, so stacks line up and gaps show as gaps.
        minutes = [span[0] + timedelta(minutes=i) for i in range(int((span[1] - span[0]).total_seconds() // 60))]
        types = [t for t in STACK if t in m.by_type] + sorted(t for t in m.by_type if t not in STACK)
        stacks = [[m.by_type[t].get(minute, 0.0) for minute in minutes] for t in types]
        top.stackplot(minutes, stacks, labels=types, colors=[STACK.get(t, "#757575") for t in types], linewidth=0)
        top.set_title(f"{distribution_id}: {m.total():,} requests", fontsize=11)
        top.set_ylabel("requests per minute")
        top.set_ylim(bottom=0)
        for name, colour in LINES.items():
            series = m.percentiles.get(name, {})
            xs = [minute for minute in minutes if minute in series]
            bottom.plot(xs, [series[x] for x in xs], color=colour, linewidth=0.9, label=name)
        bottom.set_yscale("log")
        bottom.set_ylabel("time-taken, ms (log scale)")
        bottom.set_xlabel(f"UTC, {midnight - timedelta(days=1):%Y-%m-%d} to {midnight:%Y-%m-%d}")
        for ax in (top, bottom):
            ax.axvline(midnight, color="#616161", linestyle="--", linewidth=0.8)
            ax.grid(True, which="major", color="#e0e0e0", linewidth=0.6)
            ax.set_axisbelow(True)
            ax.set_xlim(span[0], span[1] - timedelta(minutes=1))
        top.text(midnight, top.get_ylim()[1] * 0.98, f" {midnight:%b %d}", va="top", fontsize=8, color="#424242")
        if distribution_id == late[0]:
            top.axvspan(late[1], late[1] + timedelta(hours=1), color="#fff59d", alpha=0.5, zorder=0)
            top.text(late[1], top.get_ylim()[1] * 0.98, " + late file", va="top", fontsize=8, color="#424242")
        bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))  # type: ignore[no-untyped-call]
    # One legend for every column: a type seen in only one distribution (Other) still gets its entry.
    present = {t for m in metrics.values() for t in m.by_type}
    shown = [t for t in STACK if t in present] + sorted(present - set(STACK))
    handles = [Patch(color=STACK.get(t, "#757575"), label=t) for t in shown]
    figure.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, 0.955))
    line_handles, line_labels = axes[1][0].get_legend_handles_labels()
    axes[1][-1].legend(line_handles, line_labels, loc="upper right", fontsize=8, ncol=3)
    figure.suptitle("CloudFront access logs -> CloudWatch, per minute, read back with GetMetricData", fontsize=13)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
