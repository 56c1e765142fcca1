"""Download, configure, start and stop a throwaway single-node Trino server (Hive connector, local files) for tests."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

# --- What to download -------------------------------------------------------------------------------------------
# 476 is the newest release whose server archives are on Maven Central (477+ publish no trino-server* archive there).
# trino-server-core (194 MB) has no connectors; the Hive plugin comes as its own zip (258 MB): 452 MB in all,
# against 821 MB for the full trino-server-476.tar.gz with every plugin.
TRINO_VERSION = "476"
MAVEN_GROUP = "io.trino"
CORE_ARTIFACT = "trino-server-core"
CORE_PACKAGING = "tar.gz"
HIVE_ARTIFACT = "trino-hive"
HIVE_PACKAGING = "zip"
HIVE_PLUGIN_DIR = "hive"
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
READY_MARKER = ".cfmetrics-ready"

# --- Java -------------------------------------------------------------------------------------------------------
MIN_JAVA_FEATURE = 24  # TrinoSystemRequirements in 476: "Trino requires Java 24.0.1 at minimum"
JAVA_HOME_ENV = "CFMETRICS_TRINO_JAVA_HOME"
JVM_SEARCH_DIR = Path("/usr/lib/jvm")

# --- Server settings --------------------------------------------------------------------------------------------
HOST = "127.0.0.1"
DEFAULT_HEAP = "1536M"
DEFAULT_QUERY_MAX_MEMORY_PER_NODE = "768MB"
DEFAULT_CATALOG = "hive"
DEFAULT_USER = "test"
DEFAULT_START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.5
HTTP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 60
STATE_FILE_NAME = "trino-server.json"
CACHE_ENV = "XDG_CACHE_HOME"
CACHE_SUBDIR = Path("cfmetrics") / "trino"

JVM_OPTIONS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:ReservedCodeCacheSize=256M",
    "-XX:PerMethodRecompilationCutoff=10000",
    "-XX:PerBytecodeRecompilationCutoff=10000",
    "-XX:+EnableDynamicAgentLoading",
    "-Djdk.attach.allowAttachSelf=true",
    "-Djdk.nio.maxCachedBufferSize=2000000",
    "-Dfile.encoding=UTF-8",
    "-Duser.timezone=UTC",
)


class TrinoServerError(RuntimeError):
    """Raised when Trino cannot be downloaded, started, queried or stopped."""


@dataclasses.dataclass(frozen=True)
class TrinoServer:
    """A running single-node Trino server and the folders it uses."""

    url: str
    port: int
    catalog: str
    user: str
    pid: int
    home: Path  # extracted distribution (shared, read-only)
    run_dir: Path  # per-start folder: etc/, data/, server.log
    metastore_dir: Path  # file metastore of the catalog
    log_file: Path

    def query(self, sql: str, *, session: Mapping[str, str] | None = None) -> list[list[Any]]:
        """Run one statement through the REST protocol and return its rows."""
        return run_query(self.url, sql, user=self.user, catalog=self.catalog, session=session)

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrinoServer:
        try:
            return cls(
                url=str(data["url"]),
                port=int(data["port"]),
                catalog=str(data["catalog"]),
                user=str(data["user"]),
                pid=int(data["pid"]),
                home=Path(data["home"]),
                run_dir=Path(data["run_dir"]),
                metastore_dir=Path(data["metastore_dir"]),
                log_file=Path(data["log_file"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TrinoServerError(
                f"expected a state file written by 'up' with every TrinoServer field: {exc}"
            ) from exc


# --- Cache and download -----------------------------------------------------------------------------------------


def cache_root() -> Path:
    """Folder holding every extracted Trino version: ${XDG_CACHE_HOME:-~/.cache}/cfmetrics/trino."""
    base = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache")
    return Path(base) / CACHE_SUBDIR


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _maven_copy(artifact: str, dest: Path, repo_local: Path | None) -> Path:
    """Copy one artifact (group:artifact:version:packaging) from Maven Central into dest; return the file."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise TrinoServerError("expected Maven ('mvn') on PATH to download Trino; it is not there")
    cmd = [mvn, "-B", "-q", f"{MAVEN_DEPENDENCY_PLUGIN}:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={dest}"]
    if repo_local is not None:
        cmd.append(f"-Dmaven.repo.local={repo_local}")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    _, name, version, packaging = artifact.split(":")
    target = dest / f"{name}-{version}.{packaging}"
    if result.returncode != 0 or not target.is_file():
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise TrinoServerError(f"expected Maven to download {artifact} into {dest}; exit {result.returncode}:\n{tail}")
    return target


def _single_top_dir(names: list[str], archive: Path) -> str:
    tops = {n.split("/", 1)[0] for n in names if n}
    if len(tops) != 1:
        raise TrinoServerError(f"expected one top-level folder in {archive}, found {sorted(tops)[:5]}")
    return tops.pop()


def ensure_distribution(version: str = TRINO_VERSION, *, maven_repo_local: Path | None = None) -> Path:
    """Return the extracted Trino home for version, downloading it once (process-safe: lock + atomic rename).

    maven_repo_local=None downloads through a private, temporary Maven repository that is deleted afterwards, so
    the 452 MB of archives do not stay in ~/.m2 beside the extracted copy; pass a path (e.g. ~/.m2/repository)
    to reuse or keep archives.
    """
    root = cache_root()
    home = root / version
    if (home / READY_MARKER).is_file():
        return home
    with _file_lock(root / f"{version}.lock"):
        if (home / READY_MARKER).is_file():
            return home
        if home.exists():  # left half-made by a crash before the marker was written
            shutil.rmtree(home)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=root))
        try:
            repo = maven_repo_local if maven_repo_local is not None else staging / "m2"
            core = _maven_copy(f"{MAVEN_GROUP}:{CORE_ARTIFACT}:{version}:{CORE_PACKAGING}", staging, repo)
            hive = _maven_copy(f"{MAVEN_GROUP}:{HIVE_ARTIFACT}:{version}:{HIVE_PACKAGING}", staging, repo)
            extracted = staging / "x"
            with tarfile.open(core) as tar:
                top = _single_top_dir(tar.getnames(), core)
                tar.extractall(extracted, filter="tar")
            server_home = extracted / top
            with zipfile.ZipFile(hive) as zf:
                hive_top = _single_top_dir(zf.namelist(), hive)
                zf.extractall(extracted)
            plugin_dir = server_home / "plugin" / HIVE_PLUGIN_DIR
            (extracted / hive_top).rename(plugin_dir)
            for launcher in (server_home / "bin").rglob("launcher"):
                launcher.chmod(0o755)
            (server_home / READY_MARKER).write_text(f"{MAVEN_GROUP}:{CORE_ARTIFACT}+{HIVE_ARTIFACT}:{version}\n")
            server_home.rename(home)  # atomic on one file system
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return home


# --- Java -------------------------------------------------------------------------------------------------------


def _java_feature(java_home: Path) -> int | None:
    release = java_home / "release"
    if not (java_home / "bin" / "java").is_file() or not release.is_file():
        return None
    match = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(errors="replace"), re.MULTILINE)
    return int(match.group(1)) if match else None


def find_java_home(minimum: int = MIN_JAVA_FEATURE) -> Path:
    """Pick a JDK of at least `minimum`: $CFMETRICS_TRINO_JAVA_HOME, $JAVA_HOME, else the newest in /usr/lib/jvm."""
    explicit = os.environ.get(JAVA_HOME_ENV)
    if explicit:
        feature = _java_feature(Path(explicit))
        if feature is None or feature < minimum:
            raise TrinoServerError(f"expected ${JAVA_HOME_ENV}={explicit} to be a JDK >= {minimum}, found {feature}")
        return Path(explicit)
    candidates = [Path(p) for p in [os.environ.get("JAVA_HOME", "")] if p]
    if JVM_SEARCH_DIR.is_dir():
        candidates += sorted(JVM_SEARCH_DIR.iterdir())
    found = [(f, c) for c in candidates if (f := _java_feature(c)) is not None]
    good = [(f, c) for f, c in found if f >= minimum]
    if not good:
        seen = ", ".join(f"{c} ({f})" for f, c in found) or "none"
        raise TrinoServerError(
            f"Trino {TRINO_VERSION} needs Java >= {minimum}; JDKs seen: {seen}. Set ${JAVA_HOME_ENV}"
        )
    return max(good, key=lambda fc: fc[0])[1]


# --- Configuration ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def hive_catalog_properties(metastore_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Hive connector over a file metastore and the native local file system rooted at '/'."""
    props = {
        "connector.name": "hive",
        "hive.metastore": "file",
        "hive.metastore.catalog.dir": f"local://{metastore_dir}",
        "fs.native-local.enabled": "true",
        "local.location": "/",  # so local:///abs/path and file:///abs/path both mean /abs/path
        "hive.non-managed-table-writes-enabled": "true",
        "hive.non-managed-table-creates-enabled": "true",
        "hive.partition-projection-enabled": "true",
        # Athena skips a projected partition whose folder is missing (CloudFront writes none for an idle hour);
        # Trino fails with HIVE_FILE_NOT_FOUND "Partition location does not exist" unless this is true.
        "hive.ignore-absent-partitions": "true",
        "hive.storage-format": "TEXTFILE",
    }
    props.update(extra or {})
    return props


def write_config(
    run_dir: Path,
    port: int,
    *,
    heap: str,
    catalog: str,
    metastore_dir: Path,
    catalog_properties: Mapping[str, str] | None,
    extra_catalogs: Mapping[str, Mapping[str, str]] | None = None,
) -> Path:
    """Write etc/ for one coordinator+worker node under run_dir and return the etc folder.

    extra_catalogs maps further catalog names to property overrides; each is another Hive catalog over the same
    file metastore (so the same tables), useful for catalog-only settings such as hive.domain-compaction-threshold.
    """
    etc = run_dir / "etc"
    data = run_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    metastore_dir.mkdir(parents=True, exist_ok=True)
    _write_properties(
        etc / "node.properties",
        {
            "node.environment": "test",
            "node.id": str(uuid.uuid4()),
            "node.data-dir": str(data),
            "node.bind-ip": HOST,
            "node.internal-address": HOST,
        },
    )
    _write_properties(
        etc / "config.properties",
        {
            "coordinator": "true",
            "node-scheduler.include-coordinator": "true",
            "http-server.http.port": str(port),
            "discovery.uri": f"http://{HOST}:{port}",
            "query.max-memory": DEFAULT_QUERY_MAX_MEMORY_PER_NODE,
            "query.max-memory-per-node": DEFAULT_QUERY_MAX_MEMORY_PER_NODE,
            "http-server.log.enabled": "false",
        },
    )
    (etc / "jvm.config").write_text("\n".join((f"-Xmx{heap}", *JVM_OPTIONS)) + "\n")
    _write_properties(etc / "log.properties", {"io.trino": "INFO"})
    catalogs = {catalog: dict(catalog_properties or {})}
    for name, overrides in (extra_catalogs or {}).items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in catalogs:
            raise TrinoServerError(f"expected a new lower-case catalog name ([a-z][a-z0-9_]*), got {name!r}")
        catalogs[name] = {**catalogs[catalog], **overrides}
    for name, overrides in catalogs.items():
        _write_properties(etc / "catalog" / f"{name}.properties", hive_catalog_properties(metastore_dir, overrides))
    return etc


# --- REST client (stdlib) ---------------------------------------------------------------------------------------


def _http_json(url: str, *, data: bytes | None = None, headers: Mapping[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}), method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return json.loads(response.read())


def run_query(
    url: str,
    sql: str,
    *,
    user: str = DEFAULT_USER,
    catalog: str | None = None,
    session: Mapping[str, str] | None = None,
) -> list[list[Any]]:
    """Run one statement through Trino's REST protocol (POST /v1/statement, follow nextUri) and return its rows."""
    headers = {"X-Trino-User": user}
    if catalog:
        headers["X-Trino-Catalog"] = catalog
    if session:
        headers["X-Trino-Session"] = ",".join(f"{k}={v}" for k, v in session.items())
    page = _http_json(f"{url}/v1/statement", data=sql.encode(), headers=headers)
    rows: list[list[Any]] = []
    while True:
        rows.extend(page.get("data") or [])
        if "error" in page:
            err = page["error"]
            raise TrinoServerError(f"query failed: {err.get('errorName')}: {err.get('message')}\nSQL: {sql[:500]}")
        next_uri = page.get("nextUri")
        if not next_uri:
            return rows
        page = _http_json(next_uri, headers=headers)


# --- Process control --------------------------------------------------------------------------------------------


def _log_tail(log_file: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0): reap it if it is ours
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_process_group(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group led by pid, then SIGKILL it if it is still there after timeout_s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(POLL_INTERVAL_S / 5)
    if _alive(pid):
        raise TrinoServerError(f"expected Trino process group {pid} to exit after SIGKILL; it is still alive")


PROBE_SCHEMA = "cfmetrics_probe"


def _probe_catalog(server: TrinoServer, catalog: str) -> None:
    """Read one file through the catalog, so a split is scheduled on a worker.

    SELECT 1 and SHOW SCHEMAS run on the coordinator alone. For a few seconds after start-up the node manager can
    list no active node for a catalog yet, and the first table scan then fails with NO_NODES_AVAILABLE
    (trinodb/trino#2214); only a real scan proves the catalog is ready.
    """
    data = server.run_dir / "probe" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "one.txt").write_text("1\n")
    table = f"{catalog}.{PROBE_SCHEMA}.ready"
    server.query(f"CREATE SCHEMA IF NOT EXISTS {catalog}.{PROBE_SCHEMA}")
    server.query(f"DROP TABLE IF EXISTS {table}")
    server.query(f"CREATE TABLE {table} (n integer) WITH (external_location = 'local://{data}', format = 'TEXTFILE')")
    rows = server.query(f"SELECT count(*) FROM {table}")
    if rows != [[1]]:
        raise TrinoServerError(f"expected the probe table {table} to hold one row, got {rows!r}")


def _wait_ready(server: TrinoServer, timeout_s: float, catalogs: Sequence[str] = ()) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not _alive(server.pid):
            raise TrinoServerError(
                f"Trino exited during start-up; tail of {server.log_file}:\n{_log_tail(server.log_file)}"
            )
        try:
            info = _http_json(f"{server.url}/v1/info")
            if info.get("starting") is False:
                server.query("SELECT 1")
                for catalog in catalogs:
                    _probe_catalog(server, catalog)
                return
            last = f"/v1/info says starting={info.get('starting')}"
        except (urllib.error.URLError, OSError, TrinoServerError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(POLL_INTERVAL_S)
    raise TrinoServerError(
        f"expected Trino at {server.url} to answer /v1/info starting=false and SELECT 1 within {timeout_s:.0f}s; "
        f"last: {last}; tail of {server.log_file}:\n{_log_tail(server.log_file)}"
    )


def start(
    *,
    version: str = TRINO_VERSION,
    run_dir: Path | None = None,
    metastore_dir: Path | None = None,
    heap: str = DEFAULT_HEAP,
    catalog: str = DEFAULT_CATALOG,
    catalog_properties: Mapping[str, str] | None = None,
    extra_catalogs: Mapping[str, Mapping[str, str]] | None = None,
    port: int | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    user: str = DEFAULT_USER,
) -> TrinoServer:
    """Start a server in its own process group and wait until it answers; the caller must stop() it."""
    home = ensure_distribution(version)
    java_home = find_java_home()
    run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="trino-run-"))
    metastore_dir = Path(metastore_dir) if metastore_dir else run_dir / "metastore"
    port = port or free_port()
    etc = write_config(
        run_dir,
        port,
        heap=heap,
        catalog=catalog,
        metastore_dir=metastore_dir,
        catalog_properties=catalog_properties,
        extra_catalogs=extra_catalogs,
    )
    log_file = run_dir / "server.log"
    env = dict(
        os.environ, JAVA_HOME=str(java_home), PATH=f"{java_home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    cmd = [str(home / "bin" / "launcher"), "run", f"--etc-dir={etc}", f"--data-dir={run_dir / 'data'}"]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    server = TrinoServer(
        url=f"http://{HOST}:{port}",
        port=port,
        catalog=catalog,
        user=user,
        pid=proc.pid,
        home=home,
        run_dir=run_dir,
        metastore_dir=metastore_dir,
        log_file=log_file,
    )
    try:
        _wait_ready(server, timeout_s, [catalog, *(extra_catalogs or {})])
    except BaseException:
        stop_process_group(proc.pid)
        raise
    return server


def stop(server: TrinoServer) -> None:
    stop_process_group(server.pid)


@contextlib.contextmanager
def trino_server(
    *,
    version: str = TRINO_VERSION,
    heap: str = DEFAULT_HEAP,
    catalog: str = DEFAULT_CATALOG,
    catalog_properties: Mapping[str, str] | None = None,
    extra_catalogs: Mapping[str, Mapping[str, str]] | None = None,
    metastore_dir: Path | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    keep_run_dir: bool = False,
) -> Iterator[TrinoServer]:
    """Start Trino for the duration of the with-block; always stop it and (unless keep_run_dir) remove its folder."""
    run_dir = Path(tempfile.mkdtemp(prefix="trino-run-"))
    try:
        server = start(
            version=version,
            run_dir=run_dir,
            metastore_dir=metastore_dir,
            heap=heap,
            catalog=catalog,
            catalog_properties=catalog_properties,
            extra_catalogs=extra_catalogs,
            timeout_s=timeout_s,
        )
        try:
            yield server
        finally:
            stop(server)
    finally:
        if not keep_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


# --- CLI --------------------------------------------------------------------------------------------------------


def _state_file(state_dir: Path | None) -> Path:
    return (Path(state_dir) if state_dir else cache_root()) / STATE_FILE_NAME


def _cli_up(args: argparse.Namespace) -> int:
    state = _state_file(args.state_dir)
    if state.is_file():
        old = TrinoServer.from_json(json.loads(state.read_text()))
        if _alive(old.pid):
            print(f"already running (pid {old.pid}); state in {state}", file=sys.stderr)
            print(old.url)
            return 0
        state.unlink()
    t0 = time.monotonic()
    server = start(heap=args.heap, timeout_s=args.timeout)
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(server.to_json(), indent=2) + "\n")
    print(f"Trino {TRINO_VERSION} up in {time.monotonic() - t0:.1f}s, pid {server.pid}, state {state}", file=sys.stderr)
    print(server.url)
    return 0


def _cli_down(args: argparse.Namespace) -> int:
    state = _state_file(args.state_dir)
    if not state.is_file():
        print(f"no state file at {state}: nothing to stop", file=sys.stderr)
        return 0
    server = TrinoServer.from_json(json.loads(state.read_text()))
    stop(server)
    shutil.rmtree(server.run_dir, ignore_errors=True)
    state.unlink()
    print(f"stopped pid {server.pid}", file=sys.stderr)
    return 0


def _cli_download(args: argparse.Namespace) -> int:
    print(ensure_distribution(args.version))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start detached; print the URL as the last line")
    up.add_argument("--state-dir", type=Path, default=None, help="where the state file goes (default: cache dir)")
    up.add_argument("--heap", default=DEFAULT_HEAP)
    up.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT_S)
    up.set_defaults(func=_cli_up)
    down = sub.add_parser("down", help="stop the server started by 'up'")
    down.add_argument("--state-dir", type=Path, default=None)
    down.set_defaults(func=_cli_down)
    dl = sub.add_parser("download", help="only download and extract; print the Trino home")
    dl.add_argument("--version", default=TRINO_VERSION)
    dl.set_defaults(func=_cli_download)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except TrinoServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
