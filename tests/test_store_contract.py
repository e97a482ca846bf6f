"""The SQLite store passes the store contract (tests/store_contract.py); and the store's
seams: who imports what around it."""

import ast
from pathlib import Path

import pytest
from store_contract import (
    CitizenMessagesContract,
    AcceptContract, AuditContract, ClaimContract, CorrespondenceContract, FingerprintContract,
    GaugeContract, InboxContract, LifecycleContract, ReceiptContract, RecordsContract,
    new_message)
from threaded_clock import T0, ThreadedClock

from gateway.store import Store

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


def imported(path):
    """The gateway modules a source file imports (absolute names; `from a import b`
    counts as a and, when b is a module, a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (GATEWAY.parent / node.module.replace(".", "/")
                             / f"{alias.name}.py").exists())
    return {name for name in names if name == "gateway" or name.startswith("gateway.")}


def test_the_shared_records_and_receipt_ids_are_leaves():
    assert imported(GATEWAY / "model.py") == set()
    assert imported(GATEWAY / "receipt_ids.py") == set()


def test_the_store_does_not_import_the_smpp_side():
    for path in (GATEWAY / "store").glob("*.py"):
        smpp = {name for name in imported(path) if name.startswith("gateway.smpp")}
        assert not smpp, f"{path.name} imports {smpp}"


def test_the_dispatcher_knows_the_store_only_by_its_interface():
    store_side = {name for name in imported(GATEWAY / "dispatch" / "dispatcher.py")
                  if name.startswith("gateway.store")}
    assert store_side == {"gateway.store.interface"}


class TestSQLiteStore(ClaimContract, AcceptContract, ReceiptContract, RecordsContract,
                      InboxContract, CitizenMessagesContract, FingerprintContract, AuditContract, GaugeContract,
                      CorrespondenceContract, LifecycleContract):

    @pytest.fixture(autouse=True)
    def open_store(self, tmp_path):
        self.clock = ThreadedClock()
        self.path = tmp_path / "gateway.db"
        self.store = Store(self.path, self.clock, commit_interval=0.0)
        self.lease_s = self.store.lease_s
        self.store.open()
        self.others = []
        yield
        for other in self.others:
            self.clock.wait(other.close())
        self.clock.wait(self.store.close())

    def other(self):
        other = Store(self.path, self.clock, commit_interval=0.0, node="other-node")
        other.open()
        self.others.append(other)
        return other

    def wait(self, d):
        result = self.clock.wait(d)
        if hasattr(result, "raiseException"):
            result.raiseException()
        return result

    def queue(self, route=None, priority=0, created_at=T0):
        m = new_message(self.store, route=route, priority=priority, created_at=created_at)
        self.wait(self.store.accept([m]))
        return (m.id, 1)
