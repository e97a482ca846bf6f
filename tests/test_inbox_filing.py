"""Inbox.file: stores, then tells listeners once per new message, never blocking on them."""

from store_contract import reply
from store_fixtures import clock, db_path, ok, store  # noqa: F401  (fixtures)

from gateway.inbox.filing import Inbox


def test_listeners_hear_of_each_new_message_once_and_their_errors_do_not_fail_filing(
        store, clock):
    inbox = Inbox(store)
    heard = []
    inbox.listen(lambda message: 1 / 0)
    inbox.listen(heard.append)
    first = ok(clock, inbox.file(reply(source_key="mci:1")))
    again = ok(clock, inbox.file(reply(source_key="mci:1")))
    assert again.id == first.id and [m.id for m in heard] == [first.id]
    assert [m.id for m in ok(clock, inbox.list("tax"))] == [first.id]
