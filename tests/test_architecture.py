"""The package's rooms, checked by walking every import (lazy ones inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lambda_build.artifact import REPO, _imports

JOB = REPO / "job"
# What the pure core may not touch: I/O libraries, and the clock, the environment and files through the stdlib.
IO_MODULES = ("boto3", "botocore", "sqlite3", "duckdb", "fcntl", "os", "subprocess", "socket", "urllib.request",
              "http", "awswrangler", "shutil", "tempfile", "gzip")  # fmt: skip
IMPURE_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("time", "time"), ("time", "monotonic"), ("os", "environ")}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(p): p for p in sorted(JOB.rglob("*.py"))}


def imports(module: str) -> list[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = []
    for imported, names, _lazy in _imports(tree):
        found.append(imported)
        found += [f"{imported}.{n}" for n in names if f"{imported}.{n}" in MODULES]
    return found


def in_room(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def own(module: str) -> list[str]:
    return [m for m in imports(module) if m.split(".")[0] == "job"]


@pytest.mark.parametrize("module", [m for m in MODULES if in_room(m, "job.core")])
def test_core_imports_only_core_and_touches_no_io(module: str) -> None:
    assert [m for m in own(module) if not in_room(m, "job.core")] == []
    assert [m for m in imports(module) if any(in_room(m, io) for io in IO_MODULES)] == []
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        assert not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"), module
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in IMPURE_CALLS, f"{module} reads {node.value.id}.{node.attr}"


@pytest.mark.parametrize("module", [m for m in MODULES if in_room(m, "job.query")])
def test_query_imports_only_core_query_and_sqlglot(module: str) -> None:
    allowed = ("job.core", "job.query")
    assert [m for m in own(module) if not any(in_room(m, room) for room in allowed)] == []
    outside = {m.split(".")[0] for m in imports(module) if m.split(".")[0] != "job"}
    assert outside <= {"sqlglot", "__future__", "hashlib", "itertools", "collections", "dataclasses", "datetime",
                       "functools", "pathlib", "re", "typing", "enum"}, module  # fmt: skip


def test_runner_never_imports_an_adapter() -> None:
    assert [m for m in own("job.runner") if in_room(m, "job.adapters")] == []


@pytest.mark.parametrize("module", [m for m in MODULES if in_room(m, "job.adapters")])
def test_adapters_never_import_the_entry_points_or_the_orchestration(module: str) -> None:
    forbidden = ("job.runner", "job.wiring", "job.cli", "job.handler", "job.demo")
    assert [m for m in own(module) if any(in_room(m, f) for f in forbidden)] == []


@pytest.mark.parametrize("module", [m for m in MODULES if not in_room(m, "job.demo")])
def test_only_the_cli_reaches_the_demo(module: str) -> None:
    uses = [m for m in own(module) if in_room(m, "job.demo")]
    if module != "job.cli":
        assert uses == [], f"{module} imports {uses}"
        return
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    eager = [m for m, _, lazy in _imports(tree) if in_room(m, "job.demo") and not lazy]
    assert eager == [], "the CLI imports the demo only inside its demo command"


def test_one_composition_root() -> None:
    """Job is constructed in wiring only (tests and bench may build their own)."""
    builders = [
        module
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Job"
    ]
    assert builders == ["job.wiring"]


def test_the_face_of_the_package() -> None:
    import job

    assert job.__all__ == ["Job", "RunOptions", "RunReport", "Settings", "build_job"]
    for name in job.__all__:
        assert getattr(job, name).__name__ == name
