"""Run `cfmetrics` with a fault point installed: the process kills itself (SIGKILL) at the n-th call of a step.

    python -m tests.kill_runner --kill commit:mid:2 [--max-datums 250] -- run --logs ... --state ...

The same points serve the in-process simulations (tests/test_property.py, tests/reliability.py), where the
action raises instead of killing; `install` patches the classes for the duration of a `with` block.

A point is STEP:PHASE:N (N counts the calls of STEP from 1 in this process):

- begin, mark_in_flight, mark_sent, commit (the ledger's steps, LocalLedger or S3Ledger):
  `before` the step, `after` it returned, `mid` inside it: for LocalLedger at the COMMIT of its SQLite transaction
  (the rows written, not committed: the kill rolls them back), for S3Ledger after its first S3 write (begin: the
  journal written, its progress object not; commit: the first partition object written, the rest not).
- put (the sink's PutMetricData or jsonl append): `before` it is sent, `after` the destination accepted it.
- jsonl (JsonlSink.put): killed in the middle of writing the request's lines: `first-line` (the cut falls in its
  first line), `half` (half the bytes: whole lines and a torn one), `last-line` (the cut falls in its last line).
- s3write (any S3 write of S3Ledger: lease, journal, progress, partition objects, deletes): `after` the N-th.

With --hold POINT --ready-file A --go-file B the process instead stops at the point, creates A and waits for B.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from job.adapters.s3_ledger import S3Ledger
from job.adapters.sinks import CloudWatchSink, JsonlSink
from job.adapters.sqlite_ledger import LocalLedger
from tests.tight import tight_requests

LEDGER_STEPS = ("begin", "mark_in_flight", "mark_sent", "commit")
JSONL_CUTS = ("first-line", "half", "last-line")
KILLED_MARK = "kill_runner: killed at"


@dataclass(frozen=True)
class Point:
    step: str
    phase: str
    n: int

    def __str__(self) -> str:
        return f"{self.step}:{self.phase}:{self.n}"

    @classmethod
    def parse(cls, text: str) -> Point:
        step, phase, n = text.split(":")
        point = cls(step, phase, int(n))
        valid = (
            (step in LEDGER_STEPS and phase in ("before", "mid", "after"))
            or (step == "put" and phase in ("before", "after"))
            or (step == "jsonl" and phase in JSONL_CUTS)
            or (step == "s3write" and phase == "after")
        )
        if not valid or point.n < 1:
            raise ValueError(f"not a fault point: {text!r}")
        return point


# The kill points of tests/test_kill.py, as (step, phase, which call, what the process leaves behind); `which` is
# resolved against a clean run's number of requests (put, mark_*) or batches (begin, commit) by `resolve`.
KILL_CASES: tuple[tuple[str, str, str, str], ...] = (
    ("begin", "before", "first", "nothing journaled"),
    ("begin", "mid", "last", "the last batch's journal row written, not committed"),
    ("begin", "after", "last", "the last batch journaled, no request of it sent"),
    ("mark_in_flight", "mid", "middle", "an in-flight mark written, not committed"),
    ("mark_in_flight", "after", "first", "the first request marked in flight, not sent"),
    ("mark_in_flight", "after", "middle", "a middle request marked in flight, not sent"),
    ("put", "before", "last", "the last request marked in flight, not sent"),
    ("put", "after", "first", "the first request accepted, not marked sent"),
    ("put", "after", "middle", "a middle request accepted, not marked sent"),
    ("put", "after", "last", "the last request accepted, not marked sent"),
    ("mark_sent", "mid", "middle", "a sent mark written, not committed"),
    ("mark_sent", "after", "middle", "between two requests"),
    ("mark_sent", "after", "last", "every request sent, the batch not committed"),
    ("commit", "before", "first", "a batch sent, its files not recorded"),
    ("commit", "mid", "first", "a batch's files inserted, the transaction not committed"),
    ("commit", "mid", "last", "the last batch's files inserted, the transaction not committed"),
    ("commit", "after", "first", "the first batch recorded"),
)
JSONL_CASES: tuple[tuple[str, str, str, str], ...] = (
    ("jsonl", "first-line", "first", "the first request torn inside its first line"),
    ("jsonl", "first-line", "middle", "a middle request torn inside its first line"),
    ("jsonl", "half", "middle", "a middle request torn halfway: some datums whole, one torn"),
    ("jsonl", "last-line", "last", "the last request torn inside its last line"),
)


def resolve(step: str, phase: str, which: str, requests: int, batches: int) -> Point:
    """The point of a case in a run of `requests` requests in `batches` batches."""
    count = batches if step in ("begin", "commit") else requests
    n = {"first": 1, "middle": max(1, (count + 1) // 2), "last": count}[which]
    return Point(step, phase, n)


class Precondition(Exception):
    """A test's set-up did not happen as planned: raised instead of AssertionError so that an
    xfail(raises=AssertionError) test cannot pass for that reason."""


def require(condition: object, message: str = "") -> None:
    if not condition:
        raise Precondition(message)


class _Counter:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def tick(self, step: str) -> int:
        self.calls[step] = self.calls.get(step, 0) + 1
        return self.calls[step]


@dataclass
class _State:
    point: Point
    action: Callable[[Point, str], None]
    counter: _Counter = field(default_factory=_Counter)
    armed: bool = False  # inside the chosen call of a `mid` point
    fired: bool = False
    detail: str = ""  # what the step was doing (the S3 write's operation and key)

    def fire(self) -> None:
        if not self.fired:
            self.fired = True
            self.action(self.point, self.detail)


class _Db:
    """A sqlite3 connection that runs the action at the COMMIT of an armed step's transaction."""

    def __init__(self, real: Any, state: _State) -> None:
        self._real, self._state = real, state

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self._state.armed:
            self._state.armed = False
            self._state.fire()
        return self._real.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _TornFile:
    """The file JsonlSink appends to, writing only part of the request before the action runs."""

    def __init__(self, real: Any, cut: Callable[[bytes], int], state: _State) -> None:
        self._real, self._cut, self._state = real, cut, state

    def write(self, data: bytes) -> int:
        written = int(self._real.write(data[: self._cut(data)]))
        self._real.flush()
        os.fsync(self._real.fileno())
        self._state.fire()
        return written

    def __enter__(self) -> _TornFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _cut(phase: str) -> Callable[[bytes], int]:
    def cut(data: bytes) -> int:
        lines = data.split(b"\n")[:-1]
        if phase == "first-line":
            return len(lines[0]) // 2 + 1
        if phase == "last-line":
            return len(data) - len(lines[-1]) // 2 - 1
        middle = len(data) // 2
        return middle + 1 if data[middle - 1 : middle] == b"\n" else middle

    return cut


@contextmanager
def install(point: Point, action: Callable[[Point, str], None]) -> Iterator[_State]:
    """Patch the ledger and sink classes so `action(point, detail)` runs at the point; restored on exit."""
    state = _State(point, action)
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, value: Any) -> None:
        saved.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, value)

    def wrap(owner: Any, name: str, step: str) -> None:
        original = owner.__dict__[name]

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            chosen = step == point.step and state.counter.tick(step) == point.n
            if chosen and point.phase == "before":
                state.fire()
            if chosen and point.phase == "mid":
                state.armed = True
            try:
                result = original(self, *args, **kwargs)
            finally:
                state.armed = False
            if chosen and point.phase == "after":
                state.fire()
            return result

        patch(owner, name, wrapper)

    for ledger in (LocalLedger, S3Ledger):
        for step in LEDGER_STEPS:
            wrap(ledger, step, step)
    for sink in (CloudWatchSink, JsonlSink):
        wrap(sink, "put", "put")
    wrap(CloudWatchSink, "put_wire", "put")  # the runner's way to CloudWatch (its fallback does not call put)

    original_init = LocalLedger.__dict__["__init__"]

    def init(self: LocalLedger, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.db = _Db(self.db, state)  # type: ignore[assignment]

    patch(LocalLedger, "__init__", init)

    for name in ("_put", "_delete"):
        original_write = S3Ledger.__dict__[name]

        def s3_write(
            self: S3Ledger, key: str, *args: Any, _original: Any = original_write, _name: str = name, **kwargs: Any
        ) -> Any:
            result = _original(self, key, *args, **kwargs)
            state.detail = f"{_name.strip('_')} {key}"
            if state.armed:  # the first S3 write inside a `mid` step
                state.armed = False
                state.fire()
            if point.step == "s3write" and state.counter.tick("s3write") == point.n:
                state.fire()
            return result

        patch(S3Ledger, name, s3_write)

    if point.step == "jsonl":
        original_put = JsonlSink.__dict__["put"]

        def torn_put(self: JsonlSink, namespace: str, datums: Any) -> None:
            if state.counter.tick("jsonl") != point.n:
                original_put(self, namespace, datums)
                return
            real_open = pathlib.Path.open

            def torn_open(path: pathlib.Path, *args: Any, **kwargs: Any) -> Any:
                return _TornFile(real_open(path, *args, **kwargs), _cut(point.phase), state)

            setattr(pathlib.Path, "open", torn_open)  # noqa: B010 (mypy refuses assigning to a method)
            try:
                original_put(self, namespace, datums)
            finally:
                setattr(pathlib.Path, "open", real_open)  # noqa: B010

        patch(JsonlSink, "put", torn_put)

    try:
        yield state
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def sigkill(point: Point, detail: str) -> None:
    print(f"{KILLED_MARK} {point} {detail}".rstrip(), file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def hold(ready: pathlib.Path, go: pathlib.Path, timeout: float = 120.0) -> Callable[[Point, str], None]:
    def action(point: Point, detail: str) -> None:
        ready.touch()
        deadline = time.monotonic() + timeout
        while not go.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{go} did not appear")
            time.sleep(0.02)

    return action


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kill_runner", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--kill", type=Point.parse, help="kill the process at STEP:PHASE:N")
    parser.add_argument("--hold", type=Point.parse, help="stop at STEP:PHASE:N until --go-file exists")
    parser.add_argument("--ready-file", type=pathlib.Path)
    parser.add_argument("--go-file", type=pathlib.Path)
    parser.add_argument("--max-datums", type=int, help="at most this many datums per PutMetricData request")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the cfmetrics arguments")
    options = parser.parse_args(argv)
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    from job.cli import main as cli_main

    if options.hold and not (options.ready_file and options.go_file):
        parser.error("--hold needs --ready-file and --go-file")
    small = tight_requests(options.max_datums) if options.max_datums else contextlib.nullcontext()
    with small:
        if options.kill:
            with install(options.kill, sigkill):
                return cli_main(args)
        if options.hold:
            with install(options.hold, hold(options.ready_file, options.go_file)):
                return cli_main(args)
        return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
