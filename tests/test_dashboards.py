"""The CloudWatch dashboard of template.yml, the traffic alarms and dashboards/grafana-cloudfront.json: every metric,
dimension (and dimension value) and statistic they use is one the job publishes, every metric-math id they refer
to is defined, and the Grafana JSON has what Grafana's dashboard import expects."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from job.core.metrics import (
    DOCUMENTED_RESULT_TYPES,
    GROUP_METRICS,
    HEALTH_DIMENSIONS,
    MALFORMED_LINES,
    OTHER_RESULT_TYPE,
    STATUS_CLASSES,
    UNREADABLE_FILES,
    RunHealth,
    health_datums,
)
from tests.test_template import resolved

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "dashboards" / "grafana-cloudfront.json"
NAMESPACE = "CloudFront/AccessLogs"

# Published as Values/Counts: CloudWatch computes percentiles of these (and of nothing else the job publishes).
DISTRIBUTIONS = {"TimeTaken", "TimeToFirstByte"}
PERCENTILE = re.compile(r"^p\d{1,2}(\.\d+)?$")
STATISTICS = {
    "LagSeconds": {"Maximum"},
    "ScanAmplification": {"Maximum"},
    "TimeTakenP50": {"Average", "Maximum"},
    "TimeTakenP90": {"Average", "Maximum"},
    "TimeTakenP99": {"Average", "Maximum"},
}
DIMENSION_VALUES = {
    "ResultType": DOCUMENTED_RESULT_TYPES | {OTHER_RESULT_TYPE},
    "StatusClass": frozenset(STATUS_CLASSES),
    "Job": frozenset(v for _, v in HEALTH_DIMENSIONS),
}


def published() -> set[tuple[str, tuple[str, ...]]]:
    """(metric, dimension names) of everything the job publishes, with every metric group on."""
    shapes = {shape for group in GROUP_METRICS.values() for shape in group}
    shapes |= {(MALFORMED_LINES, ("DistributionId",)), (UNREADABLE_FILES, ("DistributionId",))}
    health = RunHealth(1, 0, 0, 0, scan_amplification=1.0)
    shapes |= {(d.metric, tuple(n for n, _ in d.dimensions)) for d in health_datums(health, datetime.now(UTC))}
    return shapes


@dataclass(frozen=True)
class Use:
    """One metric a dashboard panel or alarm reads."""

    where: str
    metric: str
    dimensions: Mapping[str, str | None]  # None: any value (a SEARCH over the dimension)
    statistic: str


def check_uses(uses: Iterable[Use]) -> int:
    shapes = published()
    count = 0
    for use in uses:
        count += 1
        shape = (use.metric, tuple(sorted(use.dimensions)))
        assert shape in {(m, tuple(sorted(d))) for m, d in shapes}, f"{use.where}: the job publishes no {shape}"
        for name, value in use.dimensions.items():
            if value is not None and name in DIMENSION_VALUES:
                assert value in DIMENSION_VALUES[name], f"{use.where}: {name}={value} is never published"
        if use.metric in DISTRIBUTIONS:
            ok = PERCENTILE.fullmatch(use.statistic) or use.statistic in {"Average", "SampleCount", "Maximum"}
        else:
            ok = use.statistic in STATISTICS.get(use.metric, {"Sum"})
        assert ok, f"{use.where}: statistic {use.statistic} of {use.metric} is not one to read (README)"
    return count


_SEARCH = re.compile(r"""SEARCH\('\{"?([^",}]+)"?((?:,\w+)*)\} MetricName="(\w+)"(.*?)', '(\w+)', \d+\)""")
_FILTER = re.compile(r'(\w+)="?([\w$]+)"?')


def search_uses(expression: str, where: str, namespace: str) -> list[Use]:
    uses = []
    for match in _SEARCH.finditer(expression):
        assert match.group(1) == namespace, f"{where}: SEARCH over {match.group(1)}"
        names = [n for n in match.group(2).split(",") if n]
        filters = dict(_FILTER.findall(match.group(4)))
        dims: dict[str, str | None] = {n: filters.get(n) for n in names}
        uses.append(Use(where, match.group(3), dims, match.group(5)))
    assert uses or "SEARCH" not in expression, f"{where}: unparsed SEARCH {expression}"
    return uses


def math_ids(expression: str) -> set[str]:
    """The ids a metric-math expression refers to (lower-case words that are not functions)."""
    without = re.sub(r"SEARCH\('[^']*', '\w+', \d+\)", "", expression)
    return {w for w in re.findall(r"\b([a-z]\w*)\b(?!\s*\()", without)}


# --- CloudWatch ---------------------------------------------------------------------------------------------


def cloudwatch_body(overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
    dashboard = resolved(overrides)["CloudFrontDashboard"]["Properties"]
    assert dashboard["DashboardName"] == "cfm-cloudfront"
    body: dict[str, Any] = json.loads(dashboard["DashboardBody"])
    return body


def cloudwatch_uses(body: Mapping[str, Any]) -> list[Use]:
    uses: list[Use] = []
    for number, widget in enumerate(body["widgets"]):
        properties = widget["properties"]
        where = f"CloudWatch widget {number} ({properties['title']})"
        ids, referenced = set(), set()
        for row in properties["metrics"]:
            options = row[-1] if isinstance(row[-1], dict) else {}
            if "id" in options:
                ids.add(options["id"])
            if "expression" in options:
                referenced |= math_ids(options["expression"])
                uses += search_uses(options["expression"], where, NAMESPACE)
                continue
            values = row[:-1] if options else row
            assert values[0] == NAMESPACE and len(values) % 2 == 0, f"{where}: {row}"
            dims = dict(zip(values[2::2], values[3::2], strict=True))
            uses.append(Use(where, values[1], dims, options.get("stat", properties.get("stat", ""))))
        assert referenced <= ids, f"{where}: metric math refers to undefined ids {referenced - ids}"
    return uses


def test_cloudwatch_dashboard_uses_only_published_metrics_and_statistics() -> None:
    body = cloudwatch_body()
    assert check_uses(cloudwatch_uses(body)) >= 25
    titles = " ".join(w["properties"]["title"] for w in body["widgets"])
    for what in ("result type", "hit ratio", "Error rate", "TimeTaken p50", "TimeToFirstByte", "Bytes", "lag"):
        assert what.lower() in titles.lower(), what
    for widget in body["widgets"]:
        assert widget["x"] + widget["width"] <= 24 and widget["properties"]["region"] == "us-east-1"


def test_cloudwatch_dashboard_searches_the_namespace_without_a_distribution_list() -> None:
    body = cloudwatch_body()
    (variable,) = body["variables"]
    assert (variable["type"], variable["property"], variable["defaultValue"]) == (
        "property",
        "DistributionId",
        "__FIRST",
    )
    assert variable["search"] == '{"CloudFront/AccessLogs",DistributionId} MetricName="Requests"'
    searches = [o["expression"] for w in body["widgets"] for r in w["properties"]["metrics"] for o in r
                if isinstance(o, dict) and "expression" in o and "SEARCH" in o["expression"]]  # fmt: skip
    assert len(searches) == 3 and not any("DistributionId=" in s for s in searches)


def test_cloudwatch_dashboard_follows_the_listed_distributions() -> None:
    body = cloudwatch_body({"Distributions": "E2EXAMPLE1ABCD,E3EXAMPLE", "MetricNamespace": "My/NS"})
    (variable,) = body["variables"]
    assert variable["defaultValue"] == "E2EXAMPLE1ABCD"
    assert variable["search"].endswith(" (DistributionId=E2EXAMPLE1ABCD OR DistributionId=E3EXAMPLE)")
    rows = [r for w in body["widgets"] for r in w["properties"]["metrics"] if isinstance(r[0], str)]
    assert {r[0] for r in rows} == {"My/NS"}
    assert {r[3] for r in rows if r[2] == "DistributionId"} == {"E2EXAMPLE1ABCD"}


def test_dashboard_can_be_turned_off() -> None:
    assert "CloudFrontDashboard" not in resolved({"EnableDashboard": "false"})
    assert "CloudFrontDashboard" in resolved()


ALARMS = ("ErrorRateAlarm", "HitRatioAlarm", "TimeTakenP99Alarm")
ALL_ALARMS_ON = {"TrafficAlarmDistributionId": "E2EXAMPLE1ABCD", "ErrorRateAlarmPercent": "5",
                 "HitRatioAlarmPercent": "80", "TimeTakenP99AlarmMs": "1500",
                 "AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:ops"}  # fmt: skip


def test_traffic_alarms_are_off_by_default_and_each_is_switched_by_its_threshold() -> None:
    assert not set(ALARMS) & set(resolved())
    assert not set(ALARMS) & set(resolved({"ErrorRateAlarmPercent": "5"}))  # no distribution: none
    only = resolved({"TrafficAlarmDistributionId": "E2EXAMPLE1ABCD", "HitRatioAlarmPercent": "80"})
    assert set(ALARMS) & set(only) == {"HitRatioAlarm"}
    every = resolved(ALL_ALARMS_ON)
    for name in ALARMS:
        assert every[name]["Properties"]["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:ops"]


def test_traffic_alarms_use_only_published_metrics() -> None:
    resources = resolved(ALL_ALARMS_ON)
    uses = []
    for name in ALARMS:
        properties = resources[name]["Properties"]
        if "Metrics" in properties:
            ids = {m["Id"] for m in properties["Metrics"]}
            for query in properties["Metrics"]:
                if "Expression" in query:
                    assert math_ids(query["Expression"]) <= ids, name
                    continue
                metric = query["MetricStat"]["Metric"]
                dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
                assert metric["Namespace"] == NAMESPACE and dims["DistributionId"] == "E2EXAMPLE1ABCD"
                uses.append(Use(name, metric["MetricName"], dims, query["MetricStat"]["Stat"]))
        else:
            dims = {d["Name"]: d["Value"] for d in properties["Dimensions"]}
            uses.append(Use(name, properties["MetricName"], dims, properties["ExtendedStatistic"]))
    assert check_uses(uses) == 6
    assert resources["ErrorRateAlarm"]["Properties"]["Threshold"] == "5"
    assert resources["HitRatioAlarm"]["Properties"]["ComparisonOperator"] == "LessThanThreshold"


def test_the_check_catches_a_metric_or_statistic_the_job_does_not_publish() -> None:
    with pytest.raises(AssertionError, match="publishes no"):
        check_uses([Use("x", "Requests", {"DistributionId": "E1", "HttpStatus": None}, "Sum")])
    with pytest.raises(AssertionError, match="statistic p99 of Requests"):
        check_uses([Use("x", "Requests", {"DistributionId": "E1"}, "p99")])
    with pytest.raises(AssertionError, match="StatusClass=503 is never published"):
        check_uses([Use("x", "Requests", {"DistributionId": "E1", "StatusClass": "503"}, "Sum")])
    with pytest.raises(AssertionError, match="statistic Sum of TimeTaken"):
        check_uses([Use("x", "TimeTaken", {"DistributionId": "E1"}, "Sum")])


# --- Grafana ------------------------------------------------------------------------------------------------


def grafana() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(GRAFANA.read_text())
    return dashboard


def grafana_uses(dashboard: Mapping[str, Any]) -> list[Use]:
    uses: list[Use] = []
    for panel in dashboard["panels"]:
        where = f"Grafana panel {panel['id']} ({panel['title']})"
        ids = {t["id"] for t in panel["targets"] if t.get("id")}
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "cloudwatch", "uid": "${datasource}"}, where
            assert target["queryMode"] == "Metrics" and target["region"] == "default", where
            if target["metricEditorMode"] == 1:  # code: metric math or SEARCH
                expression = target["expression"]
                assert math_ids(expression) <= ids, f"{where}: undefined ids in {expression}"
                uses += search_uses(expression, where, "$namespace")
                continue
            assert target["namespace"] == "$namespace", where
            dims = {k: (None if v == "*" else v) for k, v in target["dimensions"].items()}
            assert dims.get("DistributionId", "$distribution") == "$distribution", where
            uses.append(Use(where, target["metricName"], dims, target["statistic"]))
    return uses


def test_grafana_dashboard_uses_only_published_metrics_and_statistics() -> None:
    assert check_uses(grafana_uses(grafana())) >= 25


def test_grafana_json_is_what_grafanas_import_expects() -> None:
    dashboard = grafana()
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert "id" not in dashboard or dashboard["id"] is None  # an id would overwrite another dashboard on import
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "cloudwatch"
    distribution = variables["distribution"]
    assert distribution["type"] == "query" and distribution["datasource"]["uid"] == "${datasource}"
    assert distribution["query"]["queryType"] == "dimensionValues"
    assert (distribution["query"]["dimensionKey"], distribution["query"]["metricName"]) == (
        "DistributionId",
        "Requests",
    )
    assert variables["namespace"]["query"] == NAMESPACE
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    text = GRAFANA.read_text()
    assert set(re.findall(r"\$\{?(\w+)", text)) <= set(variables), "a variable the dashboard does not define"
    for panel in dashboard["panels"]:
        assert panel["type"] in {"timeseries", "stat", "text"}
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"} and grid["x"] + grid["w"] <= 24
        assert {t["refId"] for t in panel["targets"]} and len({t["refId"] for t in panel["targets"]}) == len(
            panel["targets"]
        )
    required = {(r["type"], r["id"]) for r in dashboard["__requires"]}
    assert ("datasource", "cloudwatch") in required and ("panel", "timeseries") in required


def test_grafana_and_cloudwatch_show_the_same_metrics() -> None:
    def shapes(uses: Iterable[Use]) -> set[tuple[str, tuple[str, ...], str]]:
        return {(u.metric, tuple(sorted(u.dimensions)), u.statistic) for u in uses}

    assert shapes(grafana_uses(grafana())) == shapes(cloudwatch_uses(cloudwatch_body()))
