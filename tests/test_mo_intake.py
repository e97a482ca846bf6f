"""Citizens' SMS intake over the real store: decoding, reassembly of concatenated parts
(UDH 8/16-bit, sar_* TLVs, message_payload), out of order, across binds, duplicated;
partial release after the timeout; routing of the whole (agency, 4040 hook, unrouted);
each part answered only after it is committed; hostile input bounded."""

import pytest
from store_fixtures import clock, db_path, store  # noqa: F401 (fixtures)

from gateway.config.schema import Agency
from gateway.inbound import InboundClassifier
from gateway.inbound.intake import DUPLICATE_WINDOW_S, REASSEMBLY_TIMEOUT_S, SWEEP_S
from gateway.inbound.mo_read import MISSING_PART
from gateway.inbox.filing import Inbox
from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU

CITIZEN = "989121234567"
PERSIAN = "سلام، پاسخ نامه\u200cی شما: پرونده ۱۲۳۴ را پیگیری می\u200cکنم و فردا به دفتر می\u200cآیم. " * 2 + "با سپاس"


def agency(id_, *numbers, **extra):
    return Agency(id=id_, name=id_, keys=(), numbers=numbers, masks=(), ussd_code=None,
                  rate_per_s=10.0, daily_parts=1000, reply_webhook=None, **extra)


AGENCIES = (agency("tax", "40401234"), agency("court", "40409"))


@pytest.fixture
def classifier(store, clock):  # noqa: F811
    return InboundClassifier(store, clock, agencies=AGENCIES, inbox=Inbox(store))


def pdu(to="40401234", body=b"salam", esm_class=0, data_coding=0, source="09121234567",
        command=c.DELIVER_SM, **tlvs):
    fields = {"source_addr": source, "destination_addr": to, "esm_class": esm_class,
              "data_coding": data_coding}
    if command == c.DELIVER_SM:
        fields["short_message"] = body
    p = PDU(command, 1, fields=fields)
    if command == c.DATA_SM:
        p.set_tlv(c.TLV_MESSAGE_PAYLOAD, body)
    for tag, value in tlvs.items():
        p.set_tlv(getattr(c, f"TLV_{tag.upper()}"), value)
    return p


def ucs2_parts(text, ref, size=134, sixteen=False):
    octets = text.encode("utf-16-be")
    chunks = [octets[i:i + size] for i in range(0, len(octets), size)]
    total = len(chunks)
    udh = ((lambda seq: bytes((6, 8, 4, ref >> 8, ref & 0xFF, total, seq))) if sixteen
           else (lambda seq: bytes((5, 0, 3, ref, total, seq))))
    return [pdu(body=udh(seq) + chunk, esm_class=c.ESM_CLASS_UDHI, data_coding=8)
            for seq, chunk in enumerate(chunks, 1)]


def send(clock, classifier, p, operator="mci", session=None):
    """The deliver_sm_resp status, once the part is committed."""
    return clock.wait(classifier.received(operator, session, p))


def drain(clock, store):
    """Let what the intake handed on after the answers commit (a later write waits)."""
    clock.wait(store.settle_mo_sets([]))
    clock.wait(store.settle_mo_sets([]))


def inbox(clock, store, agency_id):
    return clock.wait(store.list_inbox(agency_id, 0, 100))


def test_gsm_single_part_lands_in_its_agencys_inbox(classifier, store, clock):
    assert send(clock, classifier, pdu(body=b"Salam, baleh")) == c.ESME_ROK
    drain(clock, store)
    [message] = inbox(clock, store, "tax")
    assert (message.text, message.citizen, message.number, message.channel,
            message.operator, message.partial) == (
        "Salam, baleh", CITIZEN, "40401234", "sms", "mci", False)


@pytest.mark.parametrize("data_coding, body, text", [
    (8, "سلام\u200cها".encode("utf-16-be"), "سلام\u200cها"),      # UCS2 with ZWNJ
    (3, "Grüße".encode("latin-1"), "Grüße"),                     # Latin-1
    (1, b"IA5 text", "IA5 text"),                                 # IA5
    (0, b"\x00\x02@", "@$\u00a1"[:1] + "$" + "\u00a1"),           # GSM 03.38 unpacked
])
def test_each_data_coding_is_decoded(classifier, store, clock, data_coding, body, text):
    send(clock, classifier, pdu(body=body, data_coding=data_coding))
    drain(clock, store)
    assert inbox(clock, store, "tax")[0].text == text


def test_a_three_part_persian_mo_out_of_order_with_a_repeat_is_filed_once_whole(
        classifier, store, clock):
    parts = ucs2_parts(PERSIAN, ref=77)
    assert len(parts) == 3
    statuses = [send(clock, classifier, p, operator="mci", session=object())
                for p in (parts[2], parts[0], parts[2], parts[1], parts[0])]
    assert statuses == [c.ESME_ROK] * 5
    drain(clock, store)
    [message] = inbox(clock, store, "tax")
    assert message.text == PERSIAN and not message.partial


def test_16_bit_references_sar_tlvs_and_data_sm_payloads(classifier, store, clock):
    for p in reversed(ucs2_parts(PERSIAN, ref=0x1234, sixteen=True)):
        send(clock, classifier, p)
    octets = "Part one, then two".encode("latin-1")
    for seq, chunk in ((2, octets[9:]), (1, octets[:9])):
        send(clock, classifier, pdu(body=chunk, data_coding=3,
                                    sar_msg_ref_num=0x0102, sar_total_segments=2,
                                    sar_segment_seqnum=seq))
    send(clock, classifier, pdu(command=c.DATA_SM, body="بله".encode("utf-16-be"),
                                data_coding=8))
    drain(clock, store)
    assert [m.text for m in inbox(clock, store, "tax")] == [PERSIAN, "Part one, then two",
                                                            "بله"]


def test_parts_on_different_binds_of_one_operator_make_one_message(
        classifier, store, clock):
    first, second, third = ucs2_parts(PERSIAN, ref=5)
    for p in (first, second, third):
        send(clock, classifier, p, operator="mci", session=object())
    drain(clock, store)
    assert len(inbox(clock, store, "tax")) == 1


def test_the_same_reference_from_other_citizens_or_operators_never_mixes(
        classifier, store, clock):
    a = ucs2_parts(PERSIAN, ref=9)
    b = [pdu(body=p.fields["short_message"], esm_class=c.ESM_CLASS_UDHI, data_coding=8,
             source="09350000001") for p in ucs2_parts(PERSIAN[::-1], ref=9)]
    for one, other in zip(a, b):
        send(clock, classifier, one, operator="mci")
        send(clock, classifier, other, operator="mci")
    c_parts = ucs2_parts("x" * 200, ref=9)
    for p in c_parts:
        send(clock, classifier, p, operator="irancell")
    drain(clock, store)
    texts = sorted((m.citizen, m.operator, m.text) for m in inbox(clock, store, "tax"))
    assert texts == sorted([(CITIZEN, "mci", PERSIAN), ("989350000001", "mci", PERSIAN[::-1]),
                            (CITIZEN, "irancell", "x" * 200)])


def test_a_redelivered_single_part_is_filed_once(classifier, store, clock):
    for _ in range(3):
        assert send(clock, classifier, pdu(body=b"yes")) == c.ESME_ROK
    drain(clock, store)
    assert len(inbox(clock, store, "tax")) == 1
    clock.advance(DUPLICATE_WINDOW_S + SWEEP_S)       # later, the same words are news
    classifier.intake.sweep()
    send(clock, classifier, pdu(body=b"yes"))
    drain(clock, store)
    assert len(inbox(clock, store, "tax")) == 2


def test_an_incomplete_set_is_released_partial_after_the_timeout_never_dropped(
        classifier, store, clock):
    first, _, third = ucs2_parts(PERSIAN, ref=3)
    send(clock, classifier, first)
    send(clock, classifier, third)
    clock.wait(classifier.intake.sweep())
    drain(clock, store)
    assert inbox(clock, store, "tax") == []
    clock.advance(REASSEMBLY_TIMEOUT_S + 1)
    clock.wait(classifier.intake.sweep())
    drain(clock, store)
    [message] = inbox(clock, store, "tax")
    assert message.partial and MISSING_PART in message.text
    assert message.text.startswith(PERSIAN[:60])
    # The late part of a released set is a new (partial) set, not a second whole.
    clock.wait(classifier.intake.sweep())
    drain(clock, store)
    assert len(inbox(clock, store, "tax")) == 1


def test_kept_parts_survive_a_restart(db_path, clock):  # noqa: F811
    from gateway.store import Store
    first = Store(db_path, clock, commit_interval=0.0)
    first.open()
    one = InboundClassifier(first, clock, agencies=AGENCIES, inbox=Inbox(first))
    parts = ucs2_parts(PERSIAN, ref=11)
    send(clock, one, parts[0])
    send(clock, one, parts[1])
    clock.wait(first.close())
    again = Store(db_path, clock, commit_interval=0.0)
    again.open()
    try:
        two = InboundClassifier(again, clock, agencies=AGENCIES, inbox=Inbox(again))
        send(clock, two, parts[2])
        drain(clock, again)
        [message] = inbox(clock, again, "tax")
        assert message.text == PERSIAN and not message.partial
    finally:
        clock.wait(again.close())


def test_routing_after_reassembly(classifier, store, clock):
    send(clock, classifier, pdu(to="40405", body=b"to nobody"))
    send(clock, classifier, pdu(to="404099", body=b"under court"))
    send(clock, classifier, pdu(to="4040", body=b"is this genuine?"))
    drain(clock, store)
    assert [m.text for m in inbox(clock, store, "court")] == ["under court"]
    # 4040: the authenticity hook's default keeps it for admins, unrouted.
    assert sorted(m.text for m in inbox(clock, store, None)) == ["is this genuine?",
                                                                 "to nobody"]


def test_the_4040_hook_takes_the_whole_message(classifier, store, clock):
    seen = []

    class Desk:
        def handle(self, mo):
            seen.append(mo)
            from twisted.internet import defer
            return defer.succeed(None)

    classifier.use_authenticity(Desk())
    for p in ucs2_parts(PERSIAN, ref=1):
        p.fields["destination_addr"] = "4040"
        send(clock, classifier, p)
    drain(clock, store)
    [mo] = seen
    assert (mo.destination, mo.citizen, mo.text, mo.partial) == ("4040", CITIZEN, PERSIAN,
                                                                 False)
    assert inbox(clock, store, None) == []


def test_a_part_is_answered_only_after_it_is_committed(classifier, store, clock):
    held = []
    real_keep = store.keep_mo_part

    def keep_later(*args):
        held.append(args)
        from twisted.internet import defer
        return defer.Deferred()

    store.keep_mo_part = keep_later
    d = classifier.received("mci", None, pdu())
    assert not d.called and held
    store.keep_mo_part = real_keep


@pytest.mark.parametrize("bad", [
    pdu(body=b"\x09\x00\x03\x01\x02", esm_class=c.ESM_CLASS_UDHI),       # UDH too long
    pdu(body=b"x", sar_msg_ref_num=1, sar_total_segments=2),              # sar incomplete
    pdu(body=b"x", sar_msg_ref_num=1, sar_total_segments=2, sar_segment_seqnum=3),
    pdu(body=bytes((5, 0, 3, 1, 2, 1)) + b"y" * 2000, esm_class=c.ESM_CLASS_UDHI),
])
def test_malformed_or_oversized_parts_are_kept_raw_not_lost(classifier, store, clock, bad):
    assert send(clock, classifier, bad) == c.ESME_ROK
    rows = store._reader.execute("SELECT COUNT(*) FROM inbound").fetchone()[0]
    assert rows == 1
    assert store._reader.execute("SELECT COUNT(*) FROM mo_parts").fetchone()[0] == 0


def test_a_citizen_flooding_never_completed_sets_is_bounded(store, clock):  # noqa: F811
    classifier = InboundClassifier(store, clock, agencies=AGENCIES, inbox=Inbox(store),
                                   max_open_sets=4)
    for ref in range(20):
        send(clock, classifier, ucs2_parts(PERSIAN, ref=ref)[0])
    drain(clock, store)
    open_sets = store._reader.execute(
        "SELECT COUNT(DISTINCT set_id) FROM mo_parts WHERE settled = 0").fetchone()[0]
    assert open_sets <= 4
    # Released early as partial, not dropped: every first part is somewhere.
    assert open_sets + len(inbox(clock, store, "tax")) == 20


def test_all_citizens_together_hold_at_most_max_open_parts(store, clock):  # noqa: F811
    classifier = InboundClassifier(store, clock, agencies=AGENCIES, inbox=Inbox(store),
                                   max_open_parts=5)
    for n in range(12):
        p = ucs2_parts(PERSIAN, ref=1)[0]
        p.fields["source_addr"] = f"0912000{n:04d}"
        send(clock, classifier, p)
    clock.wait(classifier.intake.sweep())
    drain(clock, store)
    assert store._reader.execute(
        "SELECT COUNT(*) FROM mo_parts WHERE settled = 0").fetchone()[0] <= 5
    assert len(inbox(clock, store, "tax")) == 7


def test_logs_never_carry_a_full_number_or_the_text(classifier, store, clock, caplog):
    import logging
    caplog.set_level(logging.DEBUG)
    secret = "کد ملی ۰۰۱۲۳۴۵۶۷۸ و رمز"
    first, _, _ = ucs2_parts(secret * 8, ref=40)
    first.fields["destination_addr"] = "989350000001"               # to a citizen's number
    send(clock, classifier, first)                                   # never completed
    send(clock, classifier, pdu(body=b"\x09\x00\x03\x01", esm_class=c.ESM_CLASS_UDHI))
    send(clock, classifier, pdu(to="989350000001", body=secret.encode("utf-16-be"),
                                data_coding=8))
    clock.advance(REASSEMBLY_TIMEOUT_S + 1)
    clock.wait(classifier.intake.sweep())
    drain(clock, store)
    assert "partial" in caplog.text and "not readable" in caplog.text
    for leak in (CITIZEN, "09121234567", "989350000001", "۰۰۱۲۳۴۵۶۷۸", "رمز"):
        assert leak not in caplog.text, leak


def test_a_reused_reference_begins_a_new_message_and_releases_the_old(
        classifier, store, clock):
    old = ucs2_parts(PERSIAN, ref=21)
    new = ucs2_parts(PERSIAN[::-1], ref=21)          # the handset reused the reference
    send(clock, classifier, old[0])
    for p in new:
        assert send(clock, classifier, p) == c.ESME_ROK
    drain(clock, store)
    messages = inbox(clock, store, "tax")
    assert sorted((m.partial, m.text[:10]) for m in messages) == sorted(
        [(True, PERSIAN[:10]), (False, PERSIAN[::-1][:10])])
