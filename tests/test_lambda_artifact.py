"""The Lambda artifacts as `sam build` makes them, imported and invoked where only Lambda's packages exist.

`make build-<Function>` (the targets `sam build` runs) builds each artifact; a virtual environment holding only what
the Lambda runtime and the AWSSDKPandas layer provide (boto3, awswrangler with pandas, pyarrow and numpy: not the
project, not duckdb, not rich, not sqlglot) imports every module of the artifact, then runs its `lambda_handler`
against a moto server over HTTP (S3 logs, S3 ledger, CloudWatch; Athena's answers injected beforehand, computed by
DuckDB from the same files). The environment is cached outside the clone, keyed by the pinned versions.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from job.demo.moto_server import moto_server
from job.demo.sample_logs import generate
from lambda_build.artifact import REPO, artifact_modules
from tests.conftest import create_distributions
from tests.moto_athena import COLUMN_TYPES
from tests.test_handler_moto import (
    LOG_BUCKET,
    NAMESPACE,
    PREFIX,
    RESULTS_BUCKET,
    WORKGROUP,
    AthenaTwin,
    cloudwatch_sums,
    reference_requests,
    upload,
)

# What Lambda gives the function besides the standard library, at the versions the project's tests run with.
LAMBDA_PACKAGES = ("boto3", "awswrangler")
ENV_VARS = {
    "LOG_BUCKET": LOG_BUCKET,
    "LOG_PREFIX": PREFIX,
    "LOG_LAYOUT": "plain",
    "NAMESPACE": NAMESPACE,
    "ATHENA_WORKGROUP": WORKGROUP,
    "ATHENA_DATABASE": "cloudfront",
    "RESULTS_BUCKET": RESULTS_BUCKET,
    # Athena's answers are injected beforehand into moto's one queue, taken in query order: one query at a time
    "QUERY_CONCURRENCY": "1",
}


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cfmetrics"


def _pins() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in LAMBDA_PACKAGES]


@pytest.fixture(scope="session")
def lambda_python() -> Path:
    """The python of a virtual environment with only the runtime's and the layer's packages (made once)."""
    pins = _pins()
    key = hashlib.sha256(f"{sys.version_info[:2]} {' '.join(pins)}".encode()).hexdigest()[:12]
    home = _cache_dir() / f"lambda-env-{key}"
    python = home / "bin" / "python"
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(home.parent / f"lambda-env-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not python.exists():
            building = home.with_name(home.name + ".building")
            shutil.rmtree(building, ignore_errors=True)
            # --without-pip would leave no way to install; the venv's own pip installs the pins, then stays unused.
            subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
            subprocess.run(
                [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 *pins],
                check=True,
            )  # fmt: skip
            building.rename(home)
    return python


def build(function: str, out: Path) -> Path:
    """`make build-<function>` with ARTIFACTS_DIR set, as `sam build` runs it."""
    subprocess.run(
        ["make", "--no-print-directory", f"build-{function}", f"ARTIFACTS_DIR={out}", f"PYTHON={sys.executable}"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def metrics_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("CfMetricsFunction", tmp_path_factory.mktemp("metrics-artifact"))


@pytest.fixture(scope="module")
def mover_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("LegacyMoverFunction", tmp_path_factory.mktemp("mover-artifact"))


def shipped_modules(artifact: Path) -> set[str]:
    return {
        ".".join(path.relative_to(artifact).with_suffix("").parts).removesuffix(".__init__")
        for path in (artifact / "job").rglob("*.py")
    }


def run_in_lambda(python: Path, artifact: Path, script: str, env: dict[str, str] | None = None) -> Any:
    """Run `script` as Lambda would: the artifact first on sys.path, no site of the project, cwd the artifact;
    the script's last line of stdout is JSON."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(python), "-I", "-c", f"import sys; sys.path.insert(0, {str(artifact)!r})\n" + textwrap.dedent(script)],
        cwd=artifact,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{done.stdout[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


IMPORT_ALL = """
import importlib, json, pathlib
names = sorted(
    ".".join(p.with_suffix("").parts).removesuffix(".__init__") for p in pathlib.Path("job").rglob("*.py")
)
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
try:
    import sqlglot
    where = sqlglot.__file__
except ImportError:
    where = None
found = {}
for name in ("duckdb", "trino", "rich", "moto", "matplotlib", "pytest"):
    try:
        importlib.import_module(name)
        found[name] = True
    except ImportError:
        found[name] = False
print(json.dumps({"imported": names, "failed": failed, "sqlglot": where, "found": found}))
"""


def test_the_metrics_artifact_ships_what_the_handler_reaches(metrics_artifact: Path) -> None:
    shipped = shipped_modules(metrics_artifact)
    assert shipped == artifact_modules("job.handler")
    assert not {m for m in shipped if m.startswith("job.demo") or m in ("job.cli", "job.progress", "job.legacy_mover")}
    assert (metrics_artifact / "sql" / "minute_metrics.sql").is_file()
    vendored = sorted(p.name for p in metrics_artifact.iterdir() if p.name not in ("job", "sql"))
    assert vendored == ["sqlglot", f"sqlglot-{importlib.metadata.version('sqlglot')}.dist-info"]
    assert not list(metrics_artifact.rglob("__pycache__")) and not list(metrics_artifact.rglob("*.pyc"))


def test_the_vendored_pins_are_the_tested_versions() -> None:
    pinned = (REPO / "lambda_build" / "requirements.txt").read_text().split()
    assert f"sqlglot=={importlib.metadata.version('sqlglot')}" in pinned


def test_every_module_of_the_metrics_artifact_imports_in_lambda(lambda_python: Path, metrics_artifact: Path) -> None:
    result = run_in_lambda(lambda_python, metrics_artifact, IMPORT_ALL)
    assert result["failed"] == {}
    assert set(result["imported"]) == shipped_modules(metrics_artifact)
    assert result["sqlglot"].startswith(str(metrics_artifact)), "sqlglot must come from the artifact"
    assert result["found"] == dict.fromkeys(("duckdb", "trino", "rich", "moto", "matplotlib", "pytest"), False)


def test_every_module_of_the_mover_artifact_imports_in_lambda(lambda_python: Path, mover_artifact: Path) -> None:
    assert shipped_modules(mover_artifact) == artifact_modules("job.legacy_mover")
    assert not (mover_artifact / "sql").exists() and not (mover_artifact / "sqlglot").exists()
    result = run_in_lambda(lambda_python, mover_artifact, IMPORT_ALL)
    assert result["failed"] == {} and result["sqlglot"] is None


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


def _aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }


INVOKE = """
import json
from job.handler import lambda_handler

class Context:
    aws_request_id = "artifact-test"
    def get_remaining_time_in_millis(self):
        return 600_000

print(json.dumps(lambda_handler({event!r}, Context())))
"""


def test_the_metrics_handler_runs_in_lambda(
    lambda_python: Path, metrics_artifact: Path, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _aws_env(endpoint).items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3")
    for bucket in (LOG_BUCKET, RESULTS_BUCKET):
        s3.create_bucket(Bucket=bucket)
    athena = boto3.client("athena")
    output: Any = {"ResultConfiguration": {"OutputLocation": f"s3://{RESULTS_BUCKET}/athena-results/"}}
    athena.create_work_group(Name=WORKGROUP, Configuration=output)
    now = datetime.now(UTC).replace(minute=5, second=0, microsecond=0)
    first = now.replace(minute=0) - timedelta(hours=3)
    root = tmp_path / "logs"
    # two that exist in the account, and a made-up folder the handler skips (cloudfront:ListDistributions)
    distributions = create_distributions(boto3.client("cloudfront"), 2)
    generate(root, distributions, first, hours=2, lines_per_hour=400, files_per_hour=2)
    generate(root / "made-up", ["E9MADEUPFOLDER"], first, hours=1, lines_per_hour=10)
    for path in (root / "made-up").rglob("*.gz"):
        target = root / path.relative_to(root / "made-up")
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    shutil.rmtree(root / "made-up")
    paths = upload(s3, root)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    twin = AthenaTwin(endpoint, s3, downloads)
    for distribution_id in sorted(distributions):  # the handler queries in id order (its files sort so): one each
        files = twin.files_in_s3(distribution_id)
        twin.inject(twin.engine.query(twin.query, _params(distribution_id, files), files).rows)
    event = {"scheduled_time": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    env = {**_aws_env(endpoint), **ENV_VARS}

    summary = run_in_lambda(lambda_python, metrics_artifact, INVOKE.format(event=event), env)
    made_up = [p for p in paths if "E9MADEUPFOLDER" in p.name]
    assert made_up and summary["skipped_distributions"] == ["E9MADEUPFOLDER"]
    assert summary["status"] == "ok" and summary["files_processed"] == len(paths) - len(made_up)
    window = (first - timedelta(hours=1), now + timedelta(hours=1))
    for distribution_id in distributions:
        expected = reference_requests([p for p in paths if distribution_id in p.name])
        assert cloudwatch_sums(distribution_id, *window) == expected
    again = run_in_lambda(lambda_python, metrics_artifact, INVOKE.format(event=event), env)
    assert again["files_new"] == 0 and again["requests"] == 0, "the S3 ledger holds every file"
    assert list(COLUMN_TYPES)  # the injected result's columns are the query's


def _params(distribution_id: str, files: list[Any]) -> Any:
    from job.query.sql_files import query_parameters

    return query_parameters(distribution_id, [f.hour for f in files], [f.uri for f in files])


MOVE = """
import json
from job.legacy_mover import lambda_handler
event = {{"Records": [{{"s3": {{"bucket": {{"name": "legacy-logs"}}, "object": {{"key": {key!r}}}}}}}]}}
print(json.dumps(lambda_handler(event, None)))
"""


def test_the_mover_handler_runs_in_lambda(
    lambda_python: Path, mover_artifact: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _aws_env(endpoint).items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="legacy-logs")
    key = "flat/E1MOVER.2026-11-28-15.abcd1234.gz"
    s3.put_object(Bucket="legacy-logs", Key=key, Body=b"log bytes")
    env = {**_aws_env(endpoint), "SOURCE_BUCKET": "legacy-logs", "SOURCE_PREFIX": "flat/"}
    env |= {"DEST_BUCKET": "legacy-logs", "DEST_PREFIX": "cloudfront/", "LOG_LAYOUT": "plain"}
    counts = run_in_lambda(lambda_python, mover_artifact, MOVE.format(key=key), env)
    assert counts["moved"] == 1
    moved = s3.get_object(
        Bucket="legacy-logs", Key="cloudfront/E1MOVER/2026/11/28/15/E1MOVER.2026-11-28-15.abcd1234.gz"
    )
    assert moved["Body"].read() == b"log bytes"
