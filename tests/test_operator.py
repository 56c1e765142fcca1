"""The command line as an operator meets it (issue 14), through the `cfmetrics` console script: mistakes get
messages and cost nothing, date-only ends, one --dry-run, status that writes nothing, Ctrl-C/SIGTERM between
requests. And the docs that must match the code."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from job.demo.sample_logs import generate
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
CFMETRICS = str(Path(sys.executable).parent / "cfmetrics")
ANSI = "\x1b["


def cfmetrics(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The console script, its output to pipes (not a terminal)."""
    return subprocess.run([CFMETRICS, *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, **(env or {})})  # fmt: skip


def recent_hour(hours_ago: int) -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours_ago)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    generate(root, ["E1OPERATOR"], recent_hour(5), hours=2, lines_per_hour=40, seed=5)
    return root


def assert_no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr and ANSI not in done.stderr + done.stdout, done.stderr


# --- mistakes get messages, not tracebacks, and cost nothing -------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["--endpoint-url", "localhost:5055"],
            "--endpoint-url: endpoint 'localhost:5055': expected a URL with its scheme",
        ),
        (["--s3-endpoint-url", "127.0.0.1:9"], "--s3-endpoint-url: endpoint '127.0.0.1:9': expected a URL"),
        (["--sink", "jsonl:{file}/out.jsonl"], "is a file, not a folder"),
        (["--state", "{file}"], "--state: state {file}: is a file; expected a folder"),
    ],
)
def test_bad_sink_endpoint_or_path_stops_before_any_query(
    logs: Path, tmp_path: Path, extra: list[str], expected: str
) -> None:
    a_file = next(logs.rglob("*.gz"))
    extra = [e.format(file=a_file) for e in extra]
    sink = [] if "--sink" in extra else ["--sink", f"jsonl:{tmp_path / 'out.jsonl'}"]
    done = cfmetrics("run", "--logs", str(logs), "--state", str(tmp_path / "state"), *sink, *extra)
    assert done.returncode == 1
    assert expected.format(file=a_file) in done.stderr, done.stderr
    assert "datums" not in done.stderr  # no query ran
    assert_no_traceback(done)


def test_a_root_without_log_files_says_what_it_found_and_fails(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    (root / "E1OPERATOR.2026-11-28-15.abcd.gz").write_bytes(b"")
    done = cfmetrics("run", "--logs", str(root), "--sink", f"jsonl:{tmp_path / 'o.jsonl'}", "--state",
                     str(tmp_path / "state"))  # fmt: skip
    assert done.returncode == 1
    assert f"no log file under {root.resolve()}: found 1 file(s) that fit no layout: E1OPERATOR.2026-11-28-15" in (
        done.stderr
    )
    assert "<DistributionId>/yyyy/MM/dd/HH/<file>" in done.stderr and "DistributionId=<id>/year=yyyy" in done.stderr
    assert_no_traceback(done)


def test_a_wrong_distribution_names_those_there_and_fails(logs: Path, tmp_path: Path) -> None:
    done = cfmetrics("run", "--logs", str(logs), "--distribution", "E9WRONG", "--sink",
                     f"jsonl:{tmp_path / 'o.jsonl'}", "--state", str(tmp_path / "state"))  # fmt: skip
    assert done.returncode == 1
    assert "no log file of distribution E9WRONG" in done.stderr and "the root holds E1OPERATOR" in done.stderr


def test_an_empty_window_is_a_note_not_an_error(logs: Path, tmp_path: Path) -> None:
    done = run_cli("backfill", "--logs", str(logs), "--from", "2020-01-01", "--to", "2020-01-01",
                   "--sink", f"jsonl:{tmp_path / 'o.jsonl'}", "--state", str(tmp_path / "state"))  # fmt: skip
    assert done.code == 0, done.err
    first = recent_hour(5)
    assert f"note: no log file in 2020-01-01T00..2020-01-01T23 UTC under {logs.resolve()}; its 4 file(s) span " in (
        done.err
    )
    assert f"{first:%Y-%m-%dT%H}" in done.err


def test_a_sql_syntax_error_names_file_and_line_and_no_colour_reaches_a_pipe(logs: Path, tmp_path: Path) -> None:
    sql = tmp_path / "sql"
    sql.mkdir()
    for path in (REPO / "sql").glob("*.sql"):
        (sql / path.name).write_text(path.read_text())
    text = (REPO / "sql" / "minute_metrics.sql").read_text().splitlines()
    line = next(i for i, t in enumerate(text) if t.strip().startswith("WHERE distributionid"))
    text[line] = text[line].replace("WHERE", "WHERE WHERE", 1)  # a typo on this line
    (sql / "typo.sql").write_text("\n".join(text) + "\n")
    done = cfmetrics("run", "--logs", str(logs), "--sql-dir", str(sql), "--query", "typo", "--sink",
                     f"jsonl:{tmp_path / 'o.jsonl'}", "--state", str(tmp_path / "state"))  # fmt: skip
    assert done.returncode == 1
    assert re.search(
        rf"error: {re.escape(str(sql / 'typo.sql'))}, line {line + 1}, column \d+: cannot parse", done.stderr
    ), done.stderr
    assert_no_traceback(done)


# --- windows and dry runs ------------------------------------------------------------------------------------------


def test_a_date_only_to_means_the_whole_day(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    day = datetime(2026, 11, 28, tzinfo=UTC)
    generate(root, ["E1OPERATOR"], day.replace(hour=20), hours=2, lines_per_hour=10)  # 20:00 and 21:00
    done = run_cli("backfill", "--logs", str(root), "--from", "2026-11-28", "--to", "2026-11-28", "--dry-run",
                   "--sink", f"jsonl:{tmp_path / 'o.jsonl'}", "--state", str(tmp_path / "state"))  # fmt: skip
    assert done.code == 0, done.err
    assert "0 file(s) already published, 4 new" in done.out
    assert "2026-11-28T00..2026-11-28T23 UTC" in done.err
    helptext = " ".join(cfmetrics("backfill", "--help").stdout.split())
    assert "a date alone, e.g. 2026-11-28, means the whole day, to hour 23" in helptext


@pytest.mark.parametrize("command", ["run", "backfill"])
def test_dry_run_means_the_same_for_run_and_backfill(logs: Path, tmp_path: Path, command: str) -> None:
    out, state = tmp_path / "o.jsonl", tmp_path / "state"
    window = ["--from", f"{recent_hour(6):%Y-%m-%dT%H}", "--to", f"{recent_hour(0):%Y-%m-%d}"]
    done = cfmetrics(command, "--logs", str(logs), "--sink", f"jsonl:{out}", "--state", str(state), "--dry-run",
                     *window)  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = sorted(str(p.resolve()) for p in logs.rglob("*.gz"))
    listed = sorted(line.split()[-1] for line in done.stdout.splitlines() if line.strip().endswith(".gz"))
    assert listed == files  # what would be read
    datums = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert datums and "# request 1: PutMetricData" in done.stdout  # what would be published
    assert re.search(r"on Athena that bills [\d.,]+ MB \(10 MB minimum per query\), about \$", done.stdout)
    summary = re.search(r"dry run, nothing published: 0 file\(s\) already published, 4 new; [\d,]+ lines "
                        r"\(0 malformed\) -> ([\d,]+) datums", done.stderr)  # fmt: skip
    assert summary is not None and int(summary.group(1).replace(",", "")) == len(datums), done.stderr
    assert not out.exists() and not state.exists()  # nothing sent, nothing recorded


# --- status tells the truth about what it reads ----------------------------------------------------------------------


def test_status_says_whose_ledger_and_writes_nothing(logs: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = cfmetrics("status", "--logs", str(logs), "--namespace", "Ops/Test", cwd=work)
    assert done.returncode == 0, done.stderr
    assert list(work.iterdir()) == []  # no state folder in the working directory
    assert "ledger of: sink CloudWatch at the default endpoint of the region" in done.stdout
    assert "namespace Ops/Test; query minute_metrics" in done.stdout
    assert f"state: {work.resolve() / '.cfmetrics-state'}" in done.stdout
    assert "no ledger at" in done.stdout and "nothing recorded yet" in done.stdout
    # human ages: the oldest file's hour ended 3 h and some minutes ago
    assert re.search(r"oldest pending file (3|4) h \d+ min old", done.stdout), done.stdout
    with_endpoint = cfmetrics("status", "--logs", str(logs), "--endpoint-url", "http://127.0.0.1:5055", cwd=work)
    assert "ledger of: sink CloudWatch at http://127.0.0.1:5055" in with_endpoint.stdout


# --- Ctrl-C and SIGTERM stop between requests ----------------------------------------------------------------------


class StopAfterFirstPut(BaseHTTPRequestHandler):
    """A CloudWatch endpoint that takes every PutMetricData; on the first one it signals the job to stop."""

    calls: list[int] = []  # noqa: RUF012  (set per test)
    target_pid = 0
    stop_signal = signal.SIGTERM
    lock = threading.Lock()

    def do_POST(self) -> None:
        body_in = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        is_put = "PutMetricData" in (self.headers.get("X-Amz-Target") or "") or b"PutMetricData" in body_in
        with self.lock:
            if is_put:
                self.calls.append(1)
            if is_put and len(self.calls) == 1 and self.target_pid:
                os.kill(self.target_pid, self.stop_signal)  # arrives while the job waits for this answer
        if "json" in (self.headers.get("Content-Type") or ""):
            body, kind = b"{}", "application/x-amz-json-1.0"
        else:
            body = b'<PutMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">'
            body += b"<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></PutMetricDataResponse>"
            kind = "text/xml"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stopping_endpoint() -> Iterator[tuple[str, type[StopAfterFirstPut]]]:
    handler = type("Handler", (StopAfterFirstPut,), {"calls": [], "target_pid": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_stops_between_requests_and_the_next_run_resumes(
    tmp_path: Path, stopping_endpoint: tuple[str, type[StopAfterFirstPut]], stop_signal: signal.Signals,
    aws_environment: None,
) -> None:  # fmt: skip
    endpoint, handler = stopping_endpoint
    root, state = tmp_path / "logs", tmp_path / "state"
    generate(root, ["E1STOPPING"], recent_hour(4), hours=2, lines_per_hour=3000, files_per_hour=2, seed=9)
    args = ["run", "--logs", str(root), "--endpoint-url", endpoint, "--region", "us-east-1", "--state", str(state),
            "--in-flight-settle", "0"]  # fmt: skip
    child = subprocess.Popen([CFMETRICS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    handler.target_pid, handler.stop_signal = child.pid, stop_signal
    _, err = child.communicate(timeout=300)
    assert child.returncode == 130, err
    requests = int(re.search(r"-> [\d,]+ datums in (\d+) request\(s\)", err).group(1))  # type: ignore[union-attr]
    assert requests > 1 and len(handler.calls) == 1  # stopped after the request being sent, not after the batch
    assert f"stopped after 1 of {requests} request(s)" in err
    assert err.strip().splitlines()[-2].startswith("stopped: 0 of 4 new file(s) done, 4 left for the next run")
    assert "Traceback" not in err

    status = cfmetrics("status", "--logs", str(root), "--endpoint-url", endpoint, "--state", str(state))
    assert re.search(rf"pending batch \S+: 4 file\(s\), 1/{requests} request\(s\) sent; waits for: the next run sends",
                     status.stdout), status.stdout  # fmt: skip

    handler.target_pid = 0
    again = cfmetrics(*args)
    assert again.returncode == 0, again.stderr
    assert len(handler.calls) == requests  # every request sent exactly once over the two runs
    assert "resumed 1 interrupted batch(es)" in again.stderr and "0 new" in again.stderr


# --- docs that match the code --------------------------------------------------------------------------------------


def template_parameters() -> list[str]:
    """The names under template.yml's top-level Parameters: key, in order."""
    section = re.split(r"^\S", (REPO / "template.yml").read_text().split("\nParameters:\n", 1)[1], flags=re.M)[0]
    return re.findall(r"^  ([A-Za-z0-9]+):\s*$", section, flags=re.M)


def test_deploy_md_lists_every_template_parameter() -> None:
    table = [line for line in (REPO / "docs" / "DEPLOY.md").read_text().splitlines() if line.startswith("| `")]
    documented = {name for line in table for name in re.findall(r"`([A-Za-z0-9]+)`", line.split("|")[1])}
    parameters = template_parameters()
    assert len(parameters) > 20
    missing = [p for p in parameters if p not in documented]
    assert missing == [], f"docs/DEPLOY.md's parameter table lacks {missing}"


def test_schedule_event_is_what_the_schedule_sends() -> None:
    event = json.loads((REPO / "events" / "schedule.json").read_text())
    assert set(event) == {"scheduled_time"}
    assert '{"scheduled_time": "<aws.scheduler.scheduled-time>"}' in (REPO / "template.yml").read_text()
    datetime.strptime(event["scheduled_time"], "%Y-%m-%dT%H:%M:%SZ")


def test_status_lists_files_changed_since_recorded(logs: Path, tmp_path: Path) -> None:
    args = ["--logs", str(logs), "--sink", f"jsonl:{tmp_path / 'o.jsonl'}", "--state", str(tmp_path / "state")]
    assert run_cli("run", *args).code == 0
    changed = sorted(logs.rglob("*.gz"))[0]
    before = changed.stat().st_size
    changed.write_bytes(changed.read_bytes() + b"\0")
    status = cfmetrics("status", *args)
    assert status.returncode == 0, status.stderr
    assert f"changed since recorded: {changed.resolve()} ({before:,} bytes then, {before + 1:,} now)" in status.stdout
    assert "no ledger at" not in status.stdout


@pytest.mark.parametrize(
    ("age", "shown"),
    [
        (timedelta(days=3, hours=16, seconds=2.9), "3 d 16 h"),
        (timedelta(hours=5, minutes=12, seconds=59), "5 h 12 min"),
        (timedelta(minutes=4, seconds=30), "4 min 30 s"),
        (timedelta(seconds=12.9), "12 s"),
    ],
)
def test_ages_read_like_days_and_hours(age: timedelta, shown: str) -> None:
    from job.core.status import format_age

    assert format_age(age) == shown


@pytest.mark.parametrize("command", ["run", "backfill"])
def test_dry_run_says_what_it_would_read_publish_and_cost(logs: Path, tmp_path: Path, command: str) -> None:
    window = ["--from", f"{recent_hour(6):%Y-%m-%dT%H}", "--to", f"{recent_hour(0):%Y-%m-%dT%H}"]
    args = [command, "--logs", str(logs), "--state", str(tmp_path / "state"), "--dry-run"]
    done = cfmetrics(*args, *(window if command == "backfill" else []))
    assert done.returncode == 0, done.stderr
    datums = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    requests = sum(1 for line in done.stdout.splitlines() if line.startswith("# request "))
    series = {(d["MetricName"], tuple((x["Name"], x["Value"]) for x in d.get("Dimensions", ()))) for d in datums}
    assert datums and requests
    assert f"CloudWatch: {requests:,} PutMetricData request(s)" in done.stdout, done.stdout[-2000:]
    assert f"{len(series):,} metric(s) (name and dimensions), about ${len(series) * 0.30:,.2f} a month" in done.stdout
    assert "on Athena that bills" in done.stdout
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir()), "nothing recorded"
