"""The batch journal's formats: 2 keeps the exact request bodies' fragments, 1 (an older version's pending batch)
is still read, anything newer is refused by name; commit works from the begun batch, not the journal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from job.adapters.sqlite_ledger import LocalLedger
from job.core import wire
from job.core.batch import JOURNAL_FORMAT, Batch
from job.core.errors import LedgerError
from tests.test_ledger import AT, TARGET, batch, log_file


def format_1(b: Batch) -> dict[str, Any]:
    """What the version before format 2 journaled: no "format", every datum as Datum.to_json under "requests"."""
    data = b.to_dict()
    del data["format"], data["wire"]
    data["requests"] = [[d.to_json() for d in request] for request in b.requests]
    return data


def test_format_2_keeps_each_request_as_its_body_fragments() -> None:
    b = batch("b1", (log_file("a.gz"),))
    data = json.loads(b.to_json())
    assert data["format"] == JOURNAL_FORMAT == 2 and "requests" not in data
    for stored, request in zip(data["wire"], b.requests, strict=True):
        assert stored == [wire.fragment(d) for d in request]
    back = Batch.from_json(b.to_json())
    assert back == b and back.fragments == b.fragments and back.requests == b.requests


def test_a_format_1_journal_is_read_and_gets_the_same_fragments() -> None:
    b = batch("b1", (log_file("a.gz"),))
    old = Batch.from_dict(format_1(b))
    assert old.requests == b.requests
    assert old.fragments == tuple(tuple(wire.fragment(d) for d in r) for r in b.requests)


def test_a_pending_format_1_batch_resumes_and_commits(tmp_path: Path) -> None:
    ledger = LocalLedger(tmp_path / "state")
    b = batch("b1", (log_file("a.gz"),))
    ledger.begin(b)
    ledger.mark_sent(b.id, 0)
    # the journal as the previous version left it on disk
    ledger.db.execute("UPDATE batch_payloads SET payload = ? WHERE id = ?", (json.dumps(format_1(b)), b.id))
    reopened = LocalLedger(tmp_path / "state")
    (pending,) = reopened.pending(TARGET)
    assert pending.batch == b and pending.sent == 1
    reopened.commit(b.id, AT)
    assert reopened.recorded(TARGET) == {"/logs/E2EXAMPLE/2026/11/28/15/a.gz"}


def test_a_newer_journal_format_is_refused_by_name() -> None:
    data = batch("b1", (log_file("a.gz"),)).to_dict()
    data["format"] = JOURNAL_FORMAT + 1
    with pytest.raises(LedgerError, match=r"journal format 3 .* finish the batch with the version that wrote it"):
        Batch.from_dict(data)


def test_commit_does_not_parse_the_journal_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = LocalLedger(tmp_path / "state")
    b = batch("b1", (log_file("a.gz"),))
    ledger.begin(b)

    def refuse(*_: Any) -> Batch:
        raise AssertionError("commit parsed the journal")

    monkeypatch.setattr(Batch, "from_json", refuse)
    monkeypatch.setattr(Batch, "from_dict", refuse)
    ledger.commit(b.id, AT)
    assert ledger.recorded(TARGET) == {"/logs/E2EXAMPLE/2026/11/28/15/a.gz"}
    monkeypatch.undo()
    # a second ledger object (the next run) still commits from the journal
    again = LocalLedger(tmp_path / "state")
    c = batch("b2", (log_file("b.gz"),))
    ledger.begin(c)
    again.commit(c.id, AT)
    assert again.recorded(TARGET) == {f"/logs/E2EXAMPLE/2026/11/28/15/{n}" for n in ("a.gz", "b.gz")}
