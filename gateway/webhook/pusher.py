"""Delivering inbox messages to the agencies' reply webhooks, from durable state.

Each new inbox message of an agency with a `reply_webhook` gets a row in the store
(`webhook_pushes`, migration 10) as the inbox tells its listeners; the row is the push's
state, so pushes survive a restart (and at start, messages filed just before a crash
without their row get one). The pusher takes due rows per agency, at most `concurrency`
POSTs in flight per agency, and records each outcome:

  2xx                                   ok
  5xx, 429, timeout (5 s), no connection retried: backoff ×2 from 5 s to 30 min, with
                                        jitter, for at least 24 h, then failed
  410 Gone, any other 4xx               failed at once (the receiver refuses it)

Every attempt carries the same `webhook-id` (the inbox message's id) and a fresh
signature over its own timestamp. A failed push stays readable by polling
(`GET /v1/inbox`). Filing never waits for any of this: the listener only queues a row.
"""

import json
import logging
import random

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from gateway import metrics
from gateway.inbox.document import inbox_document
from gateway.webhook.signing import secret_key, signed_headers

log = logging.getLogger("payam.webhook")

TIMEOUT_S = 5.0
CONCURRENCY = 8                  # POSTs in flight per agency
POLL_S = 5.0                     # due retries are looked for this often
FIRST_RETRY_S = 5.0
MAX_RETRY_S = 1800.0
GIVE_UP_S = 24 * 3600.0          # retried for at least this long
RECOVER_S = 24 * 3600.0          # at start: inbox messages this recent get a missing row
MAX_ERROR = 200                  # characters of an error kept with the push
KEEP_ENDED_S = 2 * 24 * 3600.0   # ended pushes are kept this long (past RECOVER_S)
FORGET_EVERY_S = 3600.0


def retry_delay(attempts, rng):
    """Seconds before attempt `attempts + 1`: exponential, capped, jittered (0.5–1×)."""
    return min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(attempts - 1, 20)) * rng.uniform(0.5, 1.0)


def treq_post(reactor):
    """post(url, headers, body, timeout) -> Deferred[int status], with its own
    connection pool (closed by the returned close())."""
    import treq
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = CONCURRENCY
    client = HTTPClient(Agent(reactor, pool=pool, connectTimeout=TIMEOUT_S))

    def post(url, headers, body, timeout):
        d = client.post(url, data=body, headers={k: [v] for k, v in headers.items()},
                        timeout=timeout, reactor=reactor)
        # The receiver's answer body is read and dropped (never held); `timeout` bounds
        # the whole answer, body included (treq's own ends at the status line).
        d.addCallback(lambda response: treq.collect(response, lambda _: None)
                      .addCallback(lambda _: response.code))
        return d.addTimeout(timeout, reactor)
    return post, pool.closeCachedConnections


class ReplyPusher:
    def __init__(self, store, clock, agencies=(), *, post=None, close=None,
                 concurrency=CONCURRENCY, rng=None, timeout_s=TIMEOUT_S):
        """post(url, headers, body, timeout) -> Deferred[int HTTP status] (default:
        treq on `clock`, the reactor); timeout_s: how long a POST may take."""
        self.store = store
        self.timeout_s = timeout_s
        self.clock = clock
        if post is None:
            post, close = treq_post(clock)
        self.post = post
        self._close = close
        self.concurrency = concurrency
        self.rng = rng if rng is not None else random.Random()
        self._hooks = {}
        self._in_flight = {}             # agency → set of inbox seqs being POSTed
        self._poller = None
        self._forgot_at = None
        self.delivers = True             # False: queue rows only (an HTTP worker process:
                                         # the dispatcher process's poller POSTs them)
        self.update_agencies(agencies)

    def update_agencies(self, agencies):
        """SIGHUP: each agency's webhook (url, key) anew."""
        self._hooks = {a.id: (a.reply_webhook.url, secret_key(a.reply_webhook.secret))
                       for a in agencies if a.reply_webhook is not None}

    # -- lifecycle ---------------------------------------------------------------------

    def start(self):
        self._recover()
        self._poller = LoopingCall(self.poll)
        self._poller.clock = self.clock
        self._poller.start(POLL_S, now=True).addErrback(
            lambda f: log.error("webhook poller stopped: %s", f.getErrorMessage()))

    def stop(self):
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._poller = None
        if self._close is not None:
            return self._close()
        return defer.succeed(None)

    def _recover(self):
        since = self.clock.seconds() - RECOVER_S
        d = self.store.unqueued_inbox(sorted(self._hooks), since, 100_000)
        d.addCallback(lambda rows: rows and self.store.queue_pushes(rows))
        d.addErrback(lambda f: log.error("webhook recovery failed: %s", f.getErrorMessage()))

    # -- the inbox's listener ---------------------------------------------------------

    def heard(self, message):
        """Inbox listener: queue a push for a message of an agency with a webhook."""
        if message.agency not in self._hooks:
            return
        d = self.store.queue_pushes([(message.seq, message.agency)])
        if self.delivers:
            d.addCallback(lambda _: self.pump(message.agency))
        d.addErrback(lambda f: log.error("webhook push not queued (the poller retries "
                                         "after a restart): %s", f.getErrorMessage()))

    # -- delivery ------------------------------------------------------------------------

    def poll(self):
        for agency in list(self._hooks):
            self.pump(agency)
        now = self.clock.seconds()
        if self._forgot_at is None or now - self._forgot_at >= FORGET_EVERY_S:
            # Only pushes older than the restart recovery looks back are forgotten, so
            # recovery never queues a delivered message again.
            self._forgot_at = now
            self.store.forget_pushes(now - KEEP_ENDED_S).addErrback(
                lambda f: log.error("old webhook pushes not purged: %s", f.getErrorMessage()))
        d = self.store.push_counts()
        d.addCallback(self._gauges)
        d.addErrback(lambda f: log.error("webhook counts not read: %s", f.getErrorMessage()))

    def _gauges(self, counts):
        for agency in self._hooks:
            metrics.child(metrics.WEBHOOK_PENDING, agency).set(counts.get((agency, "pending"), 0))

    def pump(self, agency):
        """Start POSTs for the agency's due pushes, as far as its concurrency allows."""
        flying = self._in_flight.setdefault(agency, set())
        room = self.concurrency - len(flying)
        if room <= 0 or agency not in self._hooks:
            return
        d = self.store.due_pushes(agency, self.clock.seconds(), room + len(flying))
        d.addCallback(self._start_due, agency)
        d.addErrback(lambda f: log.error("webhook pushes not read: %s", f.getErrorMessage()))

    def _start_due(self, rows, agency):
        flying = self._in_flight[agency]
        rows = [row for row in rows if row[0] not in flying]
        rows = rows[:max(0, self.concurrency - len(flying))]
        if not rows:
            return
        for seq, _, _ in rows:
            flying.add(seq)
        d = self.store.inbox_by_seq([row[0] for row in rows])
        d.addCallback(self._send_all, agency, rows)
        d.addErrback(self._not_sent, agency, rows)

    def _not_sent(self, failure, agency, rows):
        log.error("webhook messages not read: %s", failure.getErrorMessage())
        for seq, _, _ in rows:
            self._in_flight[agency].discard(seq)

    def _send_all(self, messages, agency, rows):
        for seq, attempts, created_at in rows:
            message = messages.get(seq)
            if message is None:          # purged by retention meanwhile
                self._settle(agency, seq, "failed", attempts, "inbox message purged")
                continue
            self._send(agency, message, attempts, created_at)

    def _send(self, agency, message, attempts, created_at):
        hook = self._hooks.get(agency)
        if hook is None:                 # the webhook was removed by a reload
            self._in_flight[agency].discard(message.seq)
            return
        url, key = hook
        body = json.dumps(inbox_document(message), ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")
        headers = signed_headers(key, message.id, self.clock.seconds(), body)
        try:
            d = self.post(url, headers, body, self.timeout_s)
        except Exception:
            d = defer.fail()
        d.addBoth(self._answered, agency, message.seq, attempts + 1, created_at)

    def _answered(self, outcome, agency, seq, attempts, created_at):
        if isinstance(outcome, Failure):
            retry, error = True, f"{outcome.type.__name__}: {outcome.getErrorMessage()}"
        elif 200 <= outcome < 300:
            return self._settle(agency, seq, "ok", attempts, None)
        else:
            retry, error = (outcome >= 500 or outcome == 429), f"HTTP {outcome}"
        now = self.clock.seconds()
        if retry and now - created_at < GIVE_UP_S:
            metrics.child(metrics.WEBHOOK_PUSHES, agency, "retry").inc()
            log.info("webhook of %s: %s; retry %d", agency, error, attempts)
            next_at = now + retry_delay(attempts, self.rng)
            # The poller (every POLL_S) takes it again once due: no timer per push.
            self._settle(agency, seq, "pending", attempts, error, next_at)
            return
        self._settle(agency, seq, "failed", attempts, error)

    def _settle(self, agency, seq, state, attempts, error, next_at=None):
        if state != "pending":
            metrics.child(metrics.WEBHOOK_PUSHES, agency, state).inc()
            if state == "failed":
                log.warning("webhook of %s gave up on an inbox message after %d attempt(s): "
                            "%s (it stays readable by polling)", agency, attempts, error)
        d = self.store.push_done(seq, state, attempts,
                                 next_at if next_at is not None else self.clock.seconds(),
                                 error[:MAX_ERROR] if error else None)

        def done(_):
            self._in_flight.get(agency, set()).discard(seq)
            if state != "pending":
                self.pump(agency)
        d.addBoth(done)
        return d
