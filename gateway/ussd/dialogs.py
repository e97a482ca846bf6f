"""What one USSD step from an operator becomes: a page to answer with, or nothing.

`UssdDialogs.step(operator, kind, msisdn, session_key, text)` is called by the inbound
USSD entry for each request (kind new / continue / abort / end / unknown, as
gateway/inbound/ussd_fields.py reads the operator's fields) and answers a Deferred of a
Page (`end` True: the last page) or None (no answer). It keeps the live dialogs
(sessions.SessionTable), starts each in the menu its dial string names, and when a
dialog ends for any reason writes one record of it (store.record_ussd_dialog) and counts
it. Steps are counted per agency and outcome. Logs carry masked numbers only.

Hostile or odd traffic: a dial string that is not one, or names no agency, gets a polite
end; a repeated start (same dial string, nothing typed since) gets the same page again;
an answer after the end gets an end saying so; a step while the last one is still being
worked out (a dynamic state) is dropped; when the table is full a new dialog gets a
polite "busy" end.
"""

import logging
import os
import random

from twisted.internet import defer

from gateway import metrics
from gateway.model import UssdDialogRecord
from gateway.numbers import mask_msisdn
from gateway.ussd.dial import is_dial_string, parse_dial
from gateway.ussd.engine import Engine, Page, index_states
from gateway.ussd.sessions import IDLE_S, MAX_LIFETIME_S, MAX_SESSIONS, SessionTable

log = logging.getLogger("payam.ussd")

NEW, CONTINUE, ABORT, END, UNKNOWN = "new", "continue", "abort", "end", "unknown"
UNKNOWN_CODE = "این کد به هیچ خدمت دولتی تعلق ندارد. Unknown service code."
AFTER_END = "این نشست به پایان رسیده است. لطفاً دوباره شماره‌گیری کنید."
BUSY = "سامانه اکنون پرمشغله است. لطفاً چند دقیقه دیگر تلاش کنید."
FAILED = "خطایی رخ داد. لطفاً دوباره تلاش کنید."


class _Conversation:
    """The dialog and whose it is."""

    __slots__ = ("id", "dialog", "agency", "code", "path", "operator", "msisdn",
                 "started_at")

    def __init__(self, id, dialog, agency, code, path, operator, msisdn, started_at):
        self.id, self.dialog, self.agency, self.code = id, dialog, agency, code
        self.path, self.operator, self.msisdn, self.started_at = path, operator, msisdn, \
            started_at


class UssdDialogs:
    def __init__(self, menus, *, clock, store=None, filing=None, dynamic=None,
                 idle_s=IDLE_S, max_lifetime_s=MAX_LIFETIME_S, max_sessions=MAX_SESSIONS):
        """menus: UssdMenu records; store: where dialog records go (None: nowhere);
        filing: a filing.Filing (None: file states answer the service error);
        dynamic: a dynamic.DynamicStates (None: dynamic states show their fallback)."""
        self.clock = clock
        self.store = store
        self.filing = filing
        self.dynamic = dynamic
        self.engine = Engine(fetch=self._fetch, file=self._file)
        self.table = SessionTable(clock, self._expired, idle_s=idle_s,
                                  max_lifetime_s=max_lifetime_s, max_sessions=max_sessions)
        self._random = random.Random(os.urandom(16))
        self._serial = 0
        self.update(menus)

    def update(self, menus):
        """SIGHUP: new dialogs walk the new menus; live ones finish in theirs."""
        self.menus = {menu.code: (menu, index_states(menu)) for menu in menus}

    def start(self):
        self.table.start()

    def stop(self):
        """Stop the timers; → Deferred once the dynamic states' connections are closed."""
        self.table.stop()
        if self.dynamic is not None:
            return self.dynamic.close()
        return defer.succeed(None)

    # -- steps ---------------------------------------------------------------------------

    def step(self, operator, kind, msisdn, session_key, text):
        live = self.table.get(session_key)
        if kind == NEW or (kind == UNKNOWN and live is None and is_dial_string(text)):
            return self._new(operator, msisdn, session_key, text, live)
        if kind in (ABORT, END):
            if live is not None:
                self._close(live, "user_abort" if kind == ABORT else "network")
            return defer.succeed(None)
        if live is None:
            self._count("unknown", "after_end")
            return defer.succeed(Page(AFTER_END, True))
        conversation = live.value
        if live.busy:
            self._count(conversation.agency, "busy")
            return defer.succeed(None)
        self.table.touch(live)
        return self._run(live, self.engine.answer(conversation.dialog, text))

    def _new(self, operator, msisdn, session_key, text, live):
        code, path = parse_dial(text, self.menus)
        if code is None:
            self._count("unknown", "unknown_code")
            log.info("USSD dial from %s names no service: answered with an end",
                     mask_msisdn(msisdn))
            return defer.succeed(Page(UNKNOWN_CODE, True))
        if live is not None:
            old = live.value
            if old.code == code and old.path == path and old.dialog.steps == 0 \
                    and not live.busy:
                self._count(old.agency, "duplicate_start")   # the network said it twice
                self.table.touch(live)
                return defer.succeed(old.dialog.current)
            self._close(live, "restarted")
        menu, states = self.menus[code]
        dialog = self.engine.new_dialog(menu, states)
        conversation = _Conversation(self._new_id(), dialog, menu.agency, code, path,
                                     operator, msisdn, self.clock.seconds())
        dialog.context = conversation
        live = self.table.add(session_key, conversation)
        if live is None:
            self._count(menu.agency, "busy_table")
            log.warning("USSD: %d dialogs live, the most allowed: a new one refused",
                        len(self.table))
            return defer.succeed(Page(BUSY, True))
        metrics.USSD_SESSIONS.set(len(self.table))
        return self._run(live, self.engine.start(dialog, path))

    def _run(self, live, d):
        live.busy = True
        d.addCallbacks(self._stepped, self._failed, callbackArgs=(live,),
                       errbackArgs=(live,))
        return d

    def _stepped(self, page, live):
        live.busy = False
        conversation = live.value
        if self.table.get(live.key) is not live:
            return None                   # ended meanwhile (timed out): no answer
        self._count(conversation.agency, conversation.dialog.outcome)
        if page.end:
            self._close(live, "completed")
        return page

    def _failed(self, failure, live):
        live.busy = False
        log.error("USSD dialog %s failed: %s", live.value.id, failure.getErrorMessage())
        if self.table.get(live.key) is not live:
            return None
        self._count(live.value.agency, "error")
        self._close(live, "completed")
        return Page(FAILED, True)

    # -- ends and records ----------------------------------------------------------------

    def _expired(self, live, reason):
        self._record(live, "timeout")

    def _close(self, live, reason):
        self.table.remove(live)
        self._record(live, reason)

    def _record(self, live, reason):
        conversation = live.value
        dialog = conversation.dialog
        metrics.child(metrics.USSD_DIALOGS, conversation.agency, reason).inc()
        metrics.USSD_SESSIONS.set(len(self.table))
        if self.store is None:
            return
        record = UssdDialogRecord(
            id=conversation.id, agency=conversation.agency, operator=conversation.operator,
            msisdn=conversation.msisdn, code=conversation.code,
            started_at=conversation.started_at, ended_at=self.clock.seconds(),
            steps=dialog.steps, end_reason=reason,
            last_state=dialog.state.name if dialog.state is not None else None,
            tracking=dialog.values.get("tracking"))
        d = self.store.record_ussd_dialog(record)
        d.addErrback(lambda failure: log.error("USSD dialog record %s not stored: %s",
                                               record.id, failure.getErrorMessage()))

    def _count(self, agency, outcome):
        metrics.child(metrics.USSD_STEPS, agency, outcome).inc()

    def _new_id(self):
        self._serial += 1
        return f"{self._random.getrandbits(40):010x}{self._serial:x}"

    # -- the steps that leave the process -----------------------------------------------

    def _fetch(self, state, dialog):
        if self.dynamic is None:
            return defer.succeed(None)
        conversation = dialog.context
        return self.dynamic.fetch(state, dialog, agency=conversation.agency,
                                  code=conversation.code, msisdn=conversation.msisdn)

    def _file(self, state, dialog):
        if self.filing is None:
            return defer.succeed(None)
        conversation = dialog.context
        d = self.filing.file(state, dialog, dialog_id=conversation.id,
                             msisdn=conversation.msisdn, operator=conversation.operator)

        def not_filed(failure):
            log.error("USSD filing for %s failed: %s", mask_msisdn(conversation.msisdn),
                      failure.getErrorMessage())
            return None
        return d.addErrback(not_filed)
