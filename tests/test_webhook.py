"""The reply webhook: signed per Standard Webhooks v1 (checked with the reference
`standardwebhooks` package), retried on 5xx/429/timeouts with the same webhook-id, not
on other 4xx, for at least 24 h, from durable state (a restart loses nothing), bounded
in flight per agency; and one real POST over loopback through treq."""

import json
import time

import pytest
from standardwebhooks import Webhook as Verifier
from store_fixtures import clock, db_path, open_store, store  # noqa: F401 (fixtures)
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server

from gateway import metrics
from gateway.config.schema import Agency, Webhook
from gateway.inbox.filing import Inbox
from gateway.model import InboxEntry
from gateway.store import Store
from gateway.webhook.pusher import GIVE_UP_S, MAX_RETRY_S, POLL_S, ReplyPusher

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"      # 24 bytes, base64


def agency(id_="tax", url="http://127.0.0.1:9/replies"):
    return Agency(id=id_, name=id_, keys=(), numbers=("40401234",), masks=(),
                  ussd_code=None, rate_per_s=10.0, daily_parts=1000,
                  reply_webhook=Webhook(url=url, secret=SECRET))


def entry(text="بله، دریافت شد", agency_id="tax"):
    return InboxEntry(agency=agency_id, number="40401234", citizen="989121234567",
                      text=text, channel="sms", received_at=time.time())


class FakeReceiver:
    """post(): records each POST; answers from `answers` (a status, or an exception),
    or leaves it open when they run out."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.posts = []
        self.open = []

    def __call__(self, url, headers, body, timeout):
        self.posts.append((url, headers, body))
        if not self.answers:
            d = defer.Deferred()
            self.open.append(d)
            return d
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)


@pytest.fixture
def now_clock(clock):  # noqa: F811
    clock.advance(time.time() - clock.seconds())     # signatures are checked against now
    return clock


def settle(clock, store):  # noqa: F811
    for _ in range(3):
        clock.wait(store.settle_mo_sets([]))


def pusher_on(store, clock, receiver, **kwargs):  # noqa: F811
    pusher = ReplyPusher(store, clock, (agency(),), post=receiver, **kwargs)
    inbox = Inbox(store)
    inbox.listen(pusher.heard)
    return pusher, inbox


def push_row(store):  # noqa: F811
    return store._reader.execute(
        "SELECT state, attempts, last_error FROM webhook_pushes").fetchall()


def test_a_new_message_is_posted_signed_per_standard_webhooks(store, now_clock):
    receiver = FakeReceiver(200)
    pusher, inbox = pusher_on(store, now_clock, receiver)
    filed = now_clock.wait(inbox.file(entry()))
    settle(now_clock, store)
    [(url, headers, body)] = receiver.posts
    assert url == "http://127.0.0.1:9/replies"
    document = Verifier(SECRET).verify(body, headers)
    assert document == {"id": filed.id, "from": "989121234567", "to": "40401234",
                        "text": "بله، دریافت شد", "received_at": document["received_at"],
                        "in_reply_to": None, "channel": "sms"}
    assert headers["webhook-id"] == filed.id
    assert push_row(store) == [("ok", 1, None)]


def test_5xx_429_and_timeouts_are_retried_with_the_same_id(store, now_clock):
    from twisted.internet.error import TimeoutError as Timeout
    receiver = FakeReceiver(500, 429, Timeout(), 200)
    pusher, inbox = pusher_on(store, now_clock, receiver)
    before = metrics.child(metrics.WEBHOOK_PUSHES, "tax", "retry")._value.get()
    now_clock.wait(inbox.file(entry()))
    settle(now_clock, store)
    for _ in range(3):
        assert push_row(store)[0][0] == "pending"
        now_clock.advance(MAX_RETRY_S)
        pusher.poll()
        settle(now_clock, store)
    assert len(receiver.posts) == 4
    assert len({headers["webhook-id"] for _, headers, _ in receiver.posts}) == 1
    for _, headers, body in receiver.posts[:1]:       # the later ones: the clock ran ahead
        Verifier(SECRET).verify(body, headers)
    assert push_row(store) == [("ok", 4, None)]
    assert metrics.child(metrics.WEBHOOK_PUSHES, "tax", "retry")._value.get() == before + 3


def test_a_retry_waits_for_its_backoff(store, now_clock):
    receiver = FakeReceiver(503, 200)
    pusher, inbox = pusher_on(store, now_clock, receiver)
    now_clock.wait(inbox.file(entry()))
    settle(now_clock, store)
    pusher.poll()                                  # not due yet: backoff ≥ 2.5 s
    settle(now_clock, store)
    assert len(receiver.posts) == 1
    now_clock.advance(POLL_S * 2)
    pusher.poll()
    settle(now_clock, store)
    assert len(receiver.posts) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 410, 413])
def test_other_4xx_are_not_retried(store, now_clock, status):
    receiver = FakeReceiver(status, 200)
    pusher, inbox = pusher_on(store, now_clock, receiver)
    now_clock.wait(inbox.file(entry()))
    settle(now_clock, store)
    now_clock.advance(MAX_RETRY_S)
    pusher.poll()
    settle(now_clock, store)
    assert len(receiver.posts) == 1
    assert push_row(store) == [("failed", 1, f"HTTP {status}")]


def test_retries_go_on_for_at_least_24_hours_then_stop(store, now_clock):
    receiver = FakeReceiver(*([500] * 1000))
    pusher, inbox = pusher_on(store, now_clock, receiver)
    now_clock.wait(inbox.file(entry()))
    settle(now_clock, store)
    start = now_clock.seconds()
    while push_row(store)[0][0] == "pending":
        now_clock.advance(MAX_RETRY_S)
        pusher.poll()
        settle(now_clock, store)
    assert now_clock.seconds() - start >= GIVE_UP_S
    assert push_row(store)[0][:1] == ("failed",) and len(receiver.posts) > 40


def test_pending_pushes_survive_a_restart(db_path, now_clock):  # noqa: F811
    first = Store(db_path, now_clock, commit_interval=0.0)
    first.open()
    receiver = FakeReceiver(500)
    _, inbox = pusher_on(first, now_clock, receiver)
    filed = now_clock.wait(inbox.file(entry()))
    settle(now_clock, first)
    # A second message filed while its push row could not be written (a crash).
    lost = now_clock.wait(Inbox(first).file(entry(text="دومی")))
    now_clock.wait(first.close())
    again = Store(db_path, now_clock, commit_interval=0.0)
    again.open()
    try:
        receiver2 = FakeReceiver(200, 200)
        pusher = ReplyPusher(again, now_clock, (agency(),), post=receiver2)
        now_clock.advance(MAX_RETRY_S)
        pusher.start()
        settle(now_clock, again)
        pusher.poll()
        settle(now_clock, again)
        pusher.stop()
        assert sorted(h["webhook-id"] for _, h, _ in receiver2.posts) == sorted(
            [filed.id, lost.id])
        assert [row[0] for row in push_row(again)] == ["ok", "ok"]
    finally:
        now_clock.wait(again.close())


def test_at_most_concurrency_posts_in_flight_per_agency_and_intake_never_waits(
        store, now_clock):
    receiver = FakeReceiver()                     # never answers
    pusher, inbox = pusher_on(store, now_clock, receiver, concurrency=2)
    filed = [now_clock.wait(inbox.file(entry(text=f"m{n}"))) for n in range(6)]
    assert len(filed) == 6                        # filing went on regardless
    settle(now_clock, store)
    pusher.poll()
    settle(now_clock, store)
    assert len(receiver.posts) == 2
    receiver.open[0].callback(200)
    settle(now_clock, store)
    assert len(receiver.posts) == 3


def test_agencies_without_a_webhook_get_no_push(store, now_clock):
    receiver = FakeReceiver(200)
    pusher, inbox = pusher_on(store, now_clock, receiver)
    now_clock.wait(inbox.file(entry(agency_id="post")))
    settle(now_clock, store)
    assert receiver.posts == [] and push_row(store) == []


class _Replies(resource.Resource):
    isLeaf = True

    def __init__(self, statuses):
        super().__init__()
        self.statuses = list(statuses)
        self.seen = []

    def render_POST(self, request):
        headers = {k.decode().lower(): v[0].decode()
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        self.seen.append((headers, request.content.read()))
        request.setResponseCode(self.statuses.pop(0) if self.statuses else 200)
        return b"{}"


class LoopbackPush(unittest.TestCase):
    timeout = 15

    @defer.inlineCallbacks
    def test_a_real_post_retried_after_a_500_with_the_same_id(self):
        replies = _Replies([500])
        port = reactor.listenTCP(0, server.Site(replies), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/replies"
        store, _ = open_store(self)
        pusher = ReplyPusher(store, reactor, (agency(url=url),))
        self.addCleanup(pusher.stop)
        inbox = Inbox(store)
        inbox.listen(pusher.heard)
        filed = yield inbox.file(entry())
        from conftest import wait_until
        yield wait_until(reactor, lambda: len(replies.seen) == 1)
        yield wait_until(reactor, lambda: store._reader.execute(
            "SELECT attempts FROM webhook_pushes").fetchone() == (1,))
        store._writer.submit(lambda conn: conn.execute(
            "UPDATE webhook_pushes SET next_at = 0"))            # due now, not in 5 s
        yield store.settle_mo_sets([])
        pusher.poll()
        yield wait_until(reactor, lambda: len(replies.seen) == 2)
        for headers, body in replies.seen:
            assert headers["webhook-id"] == filed.id
            assert Verifier(SECRET).verify(body, headers)["text"] == "بله، دریافت شد"
        yield wait_until(reactor, lambda: store._reader.execute(
            "SELECT state FROM webhook_pushes").fetchone() == ("ok",))
        json.loads(replies.seen[0][1])


def test_ended_pushes_are_forgotten_after_the_recovery_window(store, now_clock):
    from gateway.webhook.pusher import KEEP_ENDED_S, RECOVER_S
    assert KEEP_ENDED_S > RECOVER_S
    receiver = FakeReceiver(200)
    pusher, inbox = pusher_on(store, now_clock, receiver)
    now_clock.wait(inbox.file(entry()))
    settle(now_clock, store)
    pusher.poll()
    settle(now_clock, store)
    assert [row[0] for row in push_row(store)] == ["ok"]
    now_clock.advance(KEEP_ENDED_S + 3600)
    pusher.poll()
    settle(now_clock, store)
    assert push_row(store) == []


class _Silent(resource.Resource):
    """Takes the POST and never answers it."""
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render_POST(self, request):
        self.requests.append(request)
        return server.NOT_DONE_YET


@defer.inlineCallbacks
def push_once_to(case, receiver):
    """One reply filed for an agency whose webhook is `receiver` (a loopback Site) with
    a 0.3 s push timeout; fires (store, pusher) once the push failed once and waits."""
    from conftest import wait_until
    port = reactor.listenTCP(0, server.Site(receiver), interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    url = f"http://127.0.0.1:{port.getHost().port}/replies"
    store, _ = open_store(case)
    pusher = ReplyPusher(store, reactor, (agency(url=url),), timeout_s=0.3)
    case.addCleanup(pusher.stop)
    inbox = Inbox(store)
    inbox.listen(pusher.heard)
    yield inbox.file(entry())
    yield wait_until(reactor, lambda: store._reader.execute(
        "SELECT state, attempts FROM webhook_pushes").fetchone() == ("pending", 1))
    return store, pusher


class LoopbackTimeout(unittest.TestCase):
    timeout = 15

    @defer.inlineCallbacks
    def test_a_receiver_that_never_answers_times_out_and_is_retried(self):
        silent = _Silent()
        store, _ = yield push_once_to(self, silent)
        [(error,)] = store._reader.execute("SELECT last_error FROM webhook_pushes")
        assert "Timeout" in error or "Cancelled" in error, error
        for request in silent.requests:         # the client's timeout closed it already
            if request.channel is not None:
                request.channel.transport.loseConnection()


class _Trickle(resource.Resource):
    """Answers 200 at once, then sends its body a byte at a time, never ending it."""
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render_POST(self, request):
        self.requests.append(request)
        request.setResponseCode(200)
        request.write(b"x")
        return server.NOT_DONE_YET


class LoopbackEndlessBody(unittest.TestCase):
    timeout = 15

    @defer.inlineCallbacks
    def test_a_receiver_whose_body_never_ends_times_out_and_is_retried(self):
        # The status line came, the body never finishes: the POST's timeout covers
        # the whole answer, so the push does not hold a slot of its agency for ever.
        trickle = _Trickle()
        _, pusher = yield push_once_to(self, trickle)
        assert not pusher._in_flight.get("tax")
        for request in trickle.requests:
            if request.channel is not None:
                request.channel.transport.loseConnection()
