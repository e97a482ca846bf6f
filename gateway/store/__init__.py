"""Durable SQLite store: WAL, one writer thread with group commit, reads on the reactor."""

from gateway.store.store import (
    ClaimedPart, DuplicateIdempotencyKey, NewMessage, PartOutcome, Store)
from gateway.store.guard import StoreUnusable
from gateway.store.writer import StoreClosed, TransactionLost

__all__ = ["ClaimedPart", "DuplicateIdempotencyKey", "NewMessage", "PartOutcome", "Store",
           "StoreClosed", "StoreUnusable", "TransactionLost"]
