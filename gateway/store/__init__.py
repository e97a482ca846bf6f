"""Durable SQLite store: WAL, one writer thread with group commit, reads on the reactor.

Callers depend on gateway.store.interface (MessageStore and its errors) and on the
records of gateway.model; the names below are kept for existing importers."""

from gateway.model import ClaimedPart, NewMessage, PartOutcome
from gateway.store.guard import StoreUnusable
from gateway.store.interface import (
    DuplicateIdempotencyKey, IdempotencyMismatch, MessageStore, StoreClosed,
    TransactionLost)
from gateway.store.store import Store

__all__ = ["ClaimedPart", "DuplicateIdempotencyKey", "IdempotencyMismatch", "MessageStore", "NewMessage",
           "PartOutcome", "Store", "StoreClosed", "StoreUnusable", "TransactionLost"]
