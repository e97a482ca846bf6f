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


def test_a_filed_text_is_logged_only_for_an_agency_the_debug_flag_names(store, clock, caplog):
    caplog.set_level("DEBUG", logger="payam.inbox")
    ok(clock, Inbox(store).file(reply(source_key="mci:1", text="first reply, not logged")))
    flagged = Inbox(store, debug_text_agencies=("tax",))
    ok(clock, flagged.file(reply(source_key="mci:2", text="second reply, logged")))
    texts = [r for r in caplog.records if getattr(r, "event", None) == "message_text"]
    assert [r.agency for r in texts] == ["tax"]
    assert "second reply, logged" in texts[0].getMessage()
    assert "first reply" not in caplog.text
    assert "98912****567" in texts[0].getMessage() and "989121234567" not in caplog.text
