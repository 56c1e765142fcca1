"""Build a Lambda function's artifact: the job modules its handler can reach, sql/ if it reads it, vendored deps.

`sam build` runs the Makefile's build-<Function> targets, which call this. What ships is computed, not listed: every
`job` module reachable from the entry module through its imports, lazily imported ones (inside functions)
included, `if TYPE_CHECKING:` blocks excluded. Third-party imports of those modules must be in the Lambda runtime
(boto3, botocore), in the AWSSDKPandas layer (awswrangler, pandas, pyarrow, numpy) or vendored here from
lambda_build/requirements.txt; anything else stops the build.

    python lambda_build/artifact.py job.handler OUT [--sql] [--vendor lambda_build/requirements.txt]
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "job"
# What Lambda's python3.12 runtime and the AWS SDK for pandas layer provide besides the standard library:
# https://docs.aws.amazon.com/lambda/latest/dg/lambda-python.html (the runtime includes the SDK for Python),
# https://aws-sdk-pandas.readthedocs.io/en/stable/layers.html (awswrangler with pandas, pyarrow, numpy).
PROVIDED = frozenset({"boto3", "botocore", "awswrangler", "pandas", "pyarrow", "numpy", "s3transfer", "dateutil"})
# Imported only inside the functions that use them, by modules a handler reaches but whose code it never runs:
# the artifact ships without them, and a call would fail with ModuleNotFoundError.
LAZY_OPTIONAL = {
    "duckdb": "the DuckDB engine, which wiring builds only for EngineKind.DUCKDB; the handler runs Athena",
    "trino": "the Trino client, which the Trino engine imports only for EngineKind.TRINO; the handler runs Athena",
}
# Stubs only, imported under TYPE_CHECKING or for annotations.
TYPING_ONLY = frozenset({"mypy_boto3_s3", "mypy_boto3_cloudwatch", "mypy_boto3_athena"})


def module_path(module: str, root: Path = REPO) -> Path:
    """The file of a job module: job/x/y.py, or job/x/y/__init__.py for a package."""
    base = root.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, lazy: bool = False) -> Iterator[tuple[str, tuple[str, ...], bool]]:
    """(module, names, lazy) of every import in the tree, at any depth, outside `if TYPE_CHECKING:` blocks;
    `lazy` for an import inside a function, which runs only when the function does."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), lazy)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), lazy
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, tuple(alias.name for alias in node.names), lazy
        yield from _imports(node, lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def imports_of(module: str, root: Path = REPO) -> tuple[set[str], set[str]]:
    """(job modules, outside top-level names) a job module imports: every job module, lazily imported ones too
    (they ship); outside names only where imported when the module loads, or lazily for a name not in
    LAZY_OPTIONAL."""
    tree = ast.parse(module_path(module, root).read_text(encoding="utf-8"))
    own: set[str] = set()
    other: set[str] = set()
    for imported, names, lazy in _imports(tree):
        top = imported.split(".")[0]
        if top != PACKAGE:
            if not (lazy and top in LAZY_OPTIONAL):
                other.add(top)
            continue
        own.add(imported)
        for name in names:  # `from job.adapters import aws` imports the module job.adapters.aws
            candidate = f"{imported}.{name}"
            if module_path(candidate, root).exists():
                own.add(candidate)
    return own, other


def _parents(module: str) -> Iterable[str]:
    parts = module.split(".")
    return (".".join(parts[:i]) for i in range(1, len(parts)))


def closure(entry: str, root: Path = REPO) -> tuple[set[str], set[str]]:
    """Every job module reachable from `entry` (packages whose __init__ runs included), and the outside names
    they import."""
    seen: set[str] = set()
    outside: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        own, other = imports_of(module, root)
        outside |= other
        todo += [m for m in own | set(_parents(module)) if m not in seen]
    return seen, outside


def third_party(names: Iterable[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


def vendored_names(requirements: Path) -> set[str]:
    """Import names of the pinned requirements (the distribution name, as for every one we vendor)."""
    names = set()
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line.split("==")[0].strip().replace("-", "_").lower())
    return names


def artifact_modules(entry: str) -> set[str]:
    """The job modules an artifact for `entry` ships."""
    return closure(entry)[0]


def build(entry: str, out: Path, with_sql: bool, requirements: Path | None) -> list[str]:
    """Write the artifact into `out`; return the modules shipped."""
    modules, outside = closure(entry)
    allowed = PROVIDED | TYPING_ONLY | (vendored_names(requirements) if requirements else set())
    missing = sorted(third_party(outside) - allowed)
    if missing:
        raise SystemExit(
            f"{entry} imports {', '.join(missing)}, which neither the Lambda runtime nor the AWSSDKPandas layer "
            f"provides: vendor it in lambda_build/requirements.txt, or stop importing it from {entry}"
        )
    out.mkdir(parents=True, exist_ok=True)
    for module in sorted(modules):
        source = module_path(module)
        target = out / source.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    if with_sql:
        shutil.copytree(REPO / "sql", out / "sql", dirs_exist_ok=True)
    if requirements is not None:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
             "--disable-pip-version-check", "--target", str(out), "-r", str(requirements)],
            check=True,
        )  # fmt: skip
    return sorted(modules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entry", help="the handler's module, e.g. job.handler")
    parser.add_argument("out", type=Path, help="the artifact folder (sam build's ARTIFACTS_DIR)")
    parser.add_argument("--sql", action="store_true", help="ship sql/ beside job/")
    parser.add_argument("--vendor", type=Path, help="pinned requirements to install into the artifact")
    args = parser.parse_args(argv)
    shipped = build(args.entry, args.out, args.sql, args.vendor)
    print(f"{args.entry}: {len(shipped)} modules into {args.out}" + (" with sql/" if args.sql else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
