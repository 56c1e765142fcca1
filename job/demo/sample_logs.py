"""Realistic CloudFront logs for the demo, the tests and the benchmark: legacy TAB format in hourly partitions."""

from __future__ import annotations

import gzip
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from job.core.files import Layout, LogFormat

HEADER = (
    "#Version: 1.0\n#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status "
    "cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header "
    "cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type "
    "cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte x-edge-detailed-result-type "
    "sc-content-type sc-content-len sc-range-start sc-range-end\n"
)
# (result type, weight, status): every documented type appears (the demo adds an unknown one itself), and every
# status class CloudFront logs: 0xx (000), 2xx, 3xx, 4xx, 5xx.
RESULT_TYPES: Sequence[tuple[str, int, str]] = (
    ("Hit", 560, "200"),
    ("RefreshHit", 60, "304"),
    ("Miss", 270, "200"),
    ("Miss", 10, "404"),  # (a result type's rows stay together: the result types drawn are those of one row each)
    ("LimitExceeded", 8, "503"),
    ("CapacityExceeded", 8, "503"),
    ("Error", 30, "502"),
    ("Error", 6, "403"),
    ("Error", 4, "000"),  # the viewer closed the connection
    ("Redirect", 30, "301"),
    ("LambdaExecutionError", 4, "500"),
)
EDGES = ("IAD89-C1", "FRA56-P7", "NRT57-P2", "LHR61-C2", "SEA19-C3", "GRU3-C1")
PATHS = ("/", "/index.html", "/app.js", "/img/hero.jpg", "/api/items?page=2", "/fonts/a.woff2", "/#anchor")
AGENTS = (
    "Mozilla/5.0%20(Windows%20NT%2010.0;%20Win64;%20x64)%20AppleWebKit/537.36",
    "curl/8.4.0",
    "Mozilla/5.0%2520(iPhone;%2520CPU%2520iPhone%2520OS%252017_0)",
)


@dataclass(frozen=True)
class SampleFile:
    path: Path
    distribution_id: str
    hour: datetime
    lines: int


def _time_taken(rng: random.Random, result_type: str) -> float:
    """Seconds with millisecond precision: fast hits, slower misses, a slow tail."""
    if result_type in ("Hit", "RefreshHit", "Redirect"):
        seconds = rng.lognormvariate(-5.5, 0.9)
    else:
        seconds = rng.lognormvariate(-2.7, 0.8)
    if rng.random() < 0.01:
        seconds = rng.uniform(2.0, 30.0)  # slow origins, big downloads
    return round(seconds, 3)


def log_line(rng: random.Random, when: datetime, host: str) -> str:
    result_type, _, status = rng.choices(RESULT_TYPES, weights=[w for _, w, _ in RESULT_TYPES])[0]
    taken = _time_taken(rng, result_type)
    ip = f"192.0.2.{rng.randint(1, 254)}" if rng.random() < 0.8 else f"2001:db8::{rng.randint(1, 9999):x}"
    forwarded = "-" if rng.random() < 0.9 else "198.51.100.7,%20203.0.113.9"
    cookie = "-" if rng.random() < 0.8 else 'session="a b#c"; theme=dark'
    fields = (
        when.strftime("%Y-%m-%d"), when.strftime("%H:%M:%S"), rng.choice(EDGES), str(rng.randint(300, 90000)),
        ip, rng.choice(("GET", "GET", "GET", "HEAD", "POST")), host, rng.choice(PATHS), status, "-",
        rng.choice(AGENTS), "-", cookie, result_type, f"{rng.getrandbits(160):040x}==", "www.example.com", "https",
        str(rng.randint(20, 900)), f"{taken:.3f}", forwarded, "TLSv1.3", "TLS_AES_128_GCM_SHA256", result_type,
        "HTTP/2.0", "-", "-", str(rng.randint(1024, 65535)), f"{taken * 0.9:.3f}", result_type, "text/html", "-",
        "-", "-",
    )  # fmt: skip
    return "\t".join(fields)


def write_log_file(
    root: Path,
    distribution_id: str,
    hour: datetime,
    lines: int,
    rng: random.Random,
    layout: Layout = Layout.PLAIN,
    suffix: str = "",
    compresslevel: int = 6,
) -> SampleFile:
    """One gzip log file of `lines` requests in partition `hour`; records are not in time order, as in real logs."""
    folder = root / layout.partition_prefix(distribution_id, hour)
    folder.mkdir(parents=True, exist_ok=True)
    unique = suffix or f"{rng.getrandbits(32):08x}"
    path = folder / f"{distribution_id}.{hour:%Y-%m-%d-%H}.{unique}.gz"
    host = f"d{distribution_id.lower()[:12]}.cloudfront.net"
    # A request finishing in the first seconds of the next hour still belongs to this partition.
    offsets = [rng.uniform(0, 3605) for _ in range(lines)]
    body = "".join(log_line(rng, hour + timedelta(seconds=s), host) + "\n" for s in offsets)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=compresslevel) as out:
        out.write(HEADER)
        out.write(body)
    return SampleFile(path, distribution_id, hour, lines)


def generate(
    root: Path,
    distributions: Sequence[str],
    first_hour: datetime,
    hours: int,
    lines_per_hour: int,
    seed: int = 7,
    files_per_hour: int = 2,
    layout: Layout = Layout.PLAIN,
) -> list[SampleFile]:
    """Several distributions over `hours` consecutive hours, each hour split into `files_per_hour` files."""
    rng = random.Random(seed)
    written = []
    for distribution_id in distributions:
        for h in range(hours):
            hour = first_hour + timedelta(hours=h)
            share = max(1, lines_per_hour // files_per_hour)
            for _ in range(files_per_hour):
                count = max(1, int(share * rng.uniform(0.6, 1.4)))
                written.append(write_log_file(root, distribution_id, hour, count, rng, layout))
    return written


# ---------------------------------------------------------------------------------------------------------------
# Standard logging v2 (CloudWatch vended-logs delivery to S3): JSON lines, w3c/plain text and Parquet. The fields
# and their order are the user's choice; timestamp (epoch seconds) and DistributionId come first by default.

LEGACY_FIELDS: tuple[str, ...] = tuple(HEADER.split("#Fields: ", 1)[1].split())
# The 39 fields of a real v2 line, in its delivery's order (fixtures/real-cloudfront-lines, line 30).
V2_FIELDS: tuple[str, ...] = ("timestamp", "DistributionId", *LEGACY_FIELDS, "timestamp(ms)", "origin-fbl",
                              "origin-lbl", "asn")  # fmt: skip


def v2_record(rng: random.Random, when: datetime, host: str, distribution_id: str) -> dict[str, str]:
    """Every v2 field of one request by field name; date/time and timestamp are the same instant (whole seconds).
    Spaces in values are URL-encoded, as CloudFront writes them, so a space-delimited delivery stays parseable."""
    legacy = [value.replace(" ", "%20") for value in log_line(rng, when, host).split("\t")]
    record = {"timestamp": str(int(when.timestamp())), "DistributionId": distribution_id}
    record.update(zip(LEGACY_FIELDS, legacy, strict=True))
    taken = float(record["time-taken"])
    record["timestamp(ms)"] = str(int(when.timestamp() * 1000))
    record["origin-fbl"] = f"{taken * 0.8:.3f}"
    record["origin-lbl"] = f"{taken * 0.9:.3f}"
    record["asn"] = str(rng.randint(1000, 65000))
    return record


def parquet_column(field: str) -> str:
    """A v2 field's column name in the Parquet output: underscores for '-' and '(', no ')', lower case
    (DistributionId as it is)."""
    if field == "DistributionId":
        return field
    return field.lower().replace("(", "_").replace(")", "").replace("-", "_")


def write_v2_log_file(
    root: Path,
    distribution_id: str,
    hour: datetime,
    lines: int,
    rng: random.Random,
    log_format: LogFormat,
    layout: Layout = Layout.PLAIN,
    fields: Sequence[str] = V2_FIELDS,
    delimiter: str = "\t",
    header: bool = True,
    suffix: str = "",
) -> SampleFile:
    """One v2 log file of `lines` requests in partition `hour` with these fields in this order: gzip JSON lines,
    gzip w3c text ('#Version'/'#Fields' header unless `header` is False: the plain output) or Parquet (every column
    a string; needs pyarrow). Records are not in time order."""
    if log_format is LogFormat.LEGACY:
        raise ValueError("legacy files come from write_log_file")
    folder = root / layout.partition_prefix(distribution_id, hour)
    folder.mkdir(parents=True, exist_ok=True)
    unique = suffix or f"{rng.getrandbits(32):08x}"
    extension = "parquet" if log_format is LogFormat.PARQUET else "gz"
    path = folder / f"{distribution_id}.{hour:%Y-%m-%d-%H}.{unique}.{extension}"
    host = f"d{distribution_id.lower()[:12]}.cloudfront.net"
    offsets = [rng.uniform(0, 3605) for _ in range(lines)]
    records = [v2_record(rng, hour + timedelta(seconds=s), host, distribution_id) for s in offsets]
    if log_format is LogFormat.PARQUET:
        import importlib

        pa = importlib.import_module("pyarrow")  # an optional dependency (via awswrangler): tests only
        pq = importlib.import_module("pyarrow.parquet")
        columns = {parquet_column(f): pa.array([r[f] for r in records], pa.string()) for f in fields}
        pq.write_table(pa.table(columns), path)
    elif log_format is LogFormat.JSON:
        import json

        body = "".join(json.dumps({f: r[f] for f in fields}, separators=(",", ":")) + "\n" for r in records)
        with gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(body)
    else:
        head = f"#Version: 1.0\n#Fields: {' '.join(fields)}\n" if header else ""
        body = "".join(delimiter.join(r[f] for f in fields) + "\n" for r in records)
        with gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(head + body)
    return SampleFile(path, distribution_id, hour, lines)


def generate_v2(
    root: Path,
    log_format: LogFormat,
    distributions: Sequence[str],
    first_hour: datetime,
    hours: int,
    lines_per_hour: int,
    seed: int = 7,
    files_per_hour: int = 2,
    layout: Layout = Layout.PLAIN,
    field_orders: Sequence[Sequence[str]] = (V2_FIELDS,),
    delimiter: str = "\t",
) -> list[SampleFile]:
    """Like generate(), in a v2 format; the files take the field orders in turn (a delivery's field choice can
    change between files)."""
    rng = random.Random(seed)
    written: list[SampleFile] = []
    for distribution_id in distributions:
        for h in range(hours):
            hour = first_hour + timedelta(hours=h)
            share = max(1, lines_per_hour // files_per_hour)
            for _ in range(files_per_hour):
                count = max(1, int(share * rng.uniform(0.6, 1.4)))
                fields = field_orders[len(written) % len(field_orders)]
                written.append(
                    write_v2_log_file(root, distribution_id, hour, count, rng, log_format, layout, fields, delimiter)
                )
    return written
