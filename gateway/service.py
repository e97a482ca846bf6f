"""The daemon as a Twisted service tree, built from a loaded GatewayConfig.

The composition root and the only layer that reads configuration: everything below is
handed plain values. One `build_*` function per domain (store, inbound, pools, dispatcher,
policy, outbound, api, http, housekeeping) makes its piece from the config and the pieces
it needs; GatewayService calls them top to bottom and holds start and stop order only.
Start order: store → binds → dispatcher → HTTP. Stop order is the reverse, so that
nothing accepted is lost: HTTP stops taking requests, the dispatcher stops claiming,
binds finish their in-flight PDUs and unbind, buffered parts go back to the store.
"""

import logging
import os

from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, inlineCallbacks

from gateway.authenticity.desk import AuthenticityDesk
from gateway.admin.endpoint import AdminAPI, status_document
from gateway.citizens.directory import FileDirectory
from gateway.citizens.http_directory import HttpDirectory
from gateway.config.load import (
    load_agencies, load_apps, load_directory_file, load_routing, load_ussd_menus)
from gateway.dispatch import Dispatcher
from gateway.gauges import store_gauges_service
from gateway.housekeeping import housekeeping_service
from gateway.http.api import AgencyAPI
from gateway.http.server import HTTPFactory
from gateway.outbound.accept import Outbound
from gateway.outbound.broadcast import Broadcasts
from gateway.outbound.feeder import BroadcastFeeder
from gateway.inbound import InboundClassifier
from gateway.inbound.ussd_fields import settings_from
from gateway.inbox.filing import Inbox
from gateway.listening import listen_tcp
from gateway.national_inbox.desk import NationalInbox
from gateway.national_inbox.identity import IdentityCheck
from gateway.outbound.platform import PLATFORM_ID
from gateway.policy.app_limits import AppRequestLimits
from gateway.mail.sender import EmailFallbackSender
from gateway.mail.smtp import SmtpClient
from gateway.outbound.fallback import EmailFallback
from gateway.policy.audit import AuditLog
from gateway.policy.auth import KeyRing
from gateway.policy.limits import AgencyLimits
from gateway.dispatch.routing import OperatorRouter
from gateway.smpp.pool import OperatorPool
from gateway.store.lock import StoreLock
from gateway.store.store import Store
from gateway.text.fingerprint import TextFingerprint
from gateway.systemd import Notifier
from gateway.ussd.dialogs import UssdDialogs
from gateway.ussd.dynamic import DynamicStates
from gateway.ussd.filing import Filing
from gateway.webhook.pusher import ReplyPusher

log = logging.getLogger("payam.service")

HTTP_DRAIN_S = 5.0      # at shutdown, how long in-flight HTTP requests may take to finish


def bounded(reactor, d, seconds):
    """d, but given up on (not failed) after `seconds`: shutdown must not hang."""
    timeout = reactor.callLater(seconds, lambda: d.called or d.cancel())
    d.addErrback(lambda failure: failure.trap(CancelledError))
    d.addBoth(lambda result: timeout.active() and timeout.cancel())
    return d


# one piece per domain ------------------------------------------------------------------

def build_store(config, reactor, create=False):
    """The store, opened: everything else reads or writes it."""
    store = Store(config.store_path, reactor)
    store.open(create=create)
    return store


def build_inbox(config, store):
    """The agencies' inboxes: SMS replies, USSD filings and app replies are filed here."""
    return Inbox(store, debug_text_agencies=config.log.debug_text_agencies)


def build_webhooks(config, store, inbox, reactor):
    """The reply webhooks' pusher, listening to the inbox (it never holds filing up)."""
    pusher = ReplyPusher(store, reactor, config.agencies)
    inbox.listen(pusher.heard)
    return pusher


def build_inbound(config, store, inbox, reactor):
    return InboundClassifier(
        store, reactor, inbox=inbox,
        receipt_ids={op.name: op.receipt_ids for op in config.operators},
        response_timeouts={op.name: op.response_timeout_s for op in config.operators},
        agencies=config.agencies)


def build_ussd(config, store, inbox, outbound, reactor):
    """The USSD dialogs over the agencies' menus: filing into the inbox (its SMS through
    the accept path), dynamic states by HTTP."""
    filing = Filing(inbox, outbound, reactor, config.agencies)
    return UssdDialogs(config.ussd_menus, clock=reactor, store=store, filing=filing,
                       dynamic=DynamicStates(reactor))


def build_directory(config, reactor):
    """The citizen directory (national ID → number), or None when gateway.yaml names
    none: then national-ID recipients and the citizen API answer that none is set.
    `url`: the lookup service, asked over HTTP with a cache (its failures are 503s)."""
    settings = config.directory
    if settings is None:
        return None
    if settings.url is not None:
        return HttpDirectory(settings, reactor)
    return FileDirectory(settings.citizens)


def build_pools(config, inbound, reactor):
    """{operator name: OperatorPool}, not started."""
    return {op.name: OperatorPool(op, inbound_handler=inbound.received, reactor=reactor)
            for op in config.operators}


def build_dispatcher(config, store, pools, reactor):
    settings = {op.name: op for op in config.operators}
    return Dispatcher(store, pools, settings, OperatorRouter(config.routing), clock=reactor)


def build_policy(config, store, reactor):
    """(KeyRing, AgencyLimits, AuditLog): who the callers are, how much they may send,
    what is recorded. The first two are updated on reload."""
    return (KeyRing(config.agencies), AgencyLimits(config.agencies, store, clock=reactor),
            AuditLog(store))


def build_outbound(store, keyring, limits, audit, dispatcher, reactor,
                   debug_text_agencies=(), email_fallback=None):
    """The accept path every channel calls; accepted messages wake the dispatcher, and
    agency texts are fingerprinted with the store's key for the 4040 check."""
    return Outbound(store, limits, audit, clock=reactor,
                    agencies=lambda: keyring.agencies, route_of=dispatcher.route_of,
                    on_accepted=dispatcher.wake,
                    fingerprint=TextFingerprint(store.fingerprint_key()),
                    debug_text_agencies=debug_text_agencies,
                    email_fallback=email_fallback)


def build_email(config, store, keyring, reactor):
    """The email fallback's sender over `smtp:`, or None without one (then the accept
    path refuses "fallback": "email")."""
    if config.smtp is None:
        return None

    def agency_name(agency_id):
        agency = next((a for a in keyring.agencies if a.id == agency_id), None)
        return agency.name if agency is not None else agency_id
    return EmailFallbackSender(store, reactor, SmtpClient(config.smtp, reactor), config.smtp,
                               agency_name)


def build_authenticity(config, store, outbound, keyring, reactor):
    """The 4040 desk: answers citizens' checks from 4040 through the accept path."""
    settings = config.authenticity
    return AuthenticityDesk(store, outbound, outbound.fingerprint, reactor,
                            agencies=lambda: keyring.agencies,
                            retention_days=settings.retention_days,
                            checks_per_hour=settings.checks_per_hour)


def build_broadcasts(store, keyring, limits, outbound, dispatcher, reactor):
    """The broadcast use case and the feeder draining open broadcasts at each agency's
    rate into the dispatcher's queue."""
    def rate_of(agency_id):
        agency = next((a for a in keyring.agencies if a.id == agency_id), None)
        return None if agency is None else agency.rate_per_s

    feeder = BroadcastFeeder(store, clock=reactor, rate_of=rate_of, on_fed=dispatcher.wake)
    broadcasts = Broadcasts(store, limits, outbound, clock=reactor,
                            route_of=dispatcher.route_of, feeder=feeder)
    return broadcasts, feeder


def build_national_inbox(config, store, inbox, directory, audit, reactor):
    """(app KeyRing, AppRequestLimits, NationalInbox): the partner apps, their rates
    (the first two updated on reload) and what they may do for a confirmed citizen."""
    national_inbox = NationalInbox(store, inbox, IdentityCheck(directory, audit),
                                   clock=reactor, hidden_agencies=(PLATFORM_ID,))
    return (KeyRing(config.apps, kind="app"), AppRequestLimits(config.apps, reactor),
            national_inbox)


def build_api(outbound, store, keyring, audit, health, reactor, broadcasts=None,
              national_inbox=None, app_keyring=None, app_limits=None):
    return AgencyAPI(outbound, store, keyring, audit, clock=reactor, health=health,
                     broadcasts=broadcasts, national_inbox=national_inbox,
                     app_keyring=app_keyring, app_limits=app_limits)


def build_http(config, api, reactor):
    return HTTPFactory(api.router, clock=reactor, max_connections=config.http_max_connections)


def build_housekeeping(config, store, reactor):
    return housekeeping_service(store, reactor, config.retention,
                                fingerprint_days=config.authenticity.retention_days)


def build_gauges(store, keyring, reactor):
    """The metrics read from the store every few seconds (queue, per-agency statuses)."""
    return store_gauges_service(store, reactor,
                                lambda: [agency.id for agency in keyring.agencies])


class GatewayService(MultiService):
    def __init__(self, config, reactor, create_store=False, listen_settings=None,
                 notifier=None):
        """listen_settings: {"http" | "metrics" | "admin": how the operator sets that
        address}, named when it cannot be listened on (default: the gateway.yaml keys);
        notifier: tells systemd (gateway.systemd.Notifier; from the environment)."""
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.create_store = create_store     # begin an empty store where one existed
        self.listen_settings = {
            "http": f"http.listen in {config.path}",
            "metrics": f"metrics.listen in {config.path}",
            "admin": f"admin.listen in {config.path}",
            **(listen_settings or {})}
        self.notifier = notifier if notifier is not None else Notifier()
        self.reload_problem = None           # why the last reload was refused
        self.store_lock = StoreLock(config.store_path)
        self.store = None
        self.pools = {}
        self.dispatcher = None
        self.keyring = None
        self.limits = None
        self.outbound = None
        self.broadcasts = None
        self.feeder = None
        self.api = None
        self.http_factory = None
        self.http_port = None
        self.metrics_port = None
        self.admin_port = None
        self.ussd = None
        self.webhooks = None
        self.directory = None
        self.app_keyring = None
        self.app_limits = None
        self.email = None

    # lifecycle -----------------------------------------------------------------
    def startService(self):
        # store → binds → dispatcher → HTTP (the module docstring says why).  One
        # daemon per store: the lock is held until stopService has closed it.
        self.store_lock.acquire()
        try:
            self.store = build_store(self.config, self.reactor, create=self.create_store)
        except BaseException:
            self.store_lock.release()
            raise
        self._build()
        super().startService()             # the children: binds, then housekeeping
        self.inbound.start()               # the MO intake's sweep (partial sets)
        self.webhooks.start()              # pushes left pending by the last run
        if self.email is not None:
            self.email.start()             # fallbacks due (or left claimed by a crash)
        self.dispatcher.start()
        self.feeder.start()
        self._listen()
        # The store is open, HTTP listens, metrics are served: systemd may go on.
        self.notifier.ready(f"agency API on {self.config.http_listen[0]}:"
                            f"{self.http_port.getHost().port}")
        self.notifier.start_watchdog(self.reactor)

    def _build(self):
        """Every piece over the open store; pools and housekeeping become children."""
        config, reactor, store = self.config, self.reactor, self.store
        self.inbox = build_inbox(config, store)
        self.directory = build_directory(config, reactor)
        self.webhooks = build_webhooks(config, store, self.inbox, reactor)
        self.inbound = inbound = build_inbound(config, store, self.inbox, reactor)
        self.pools = build_pools(config, inbound, reactor)
        for pool in self.pools.values():
            pool.setServiceParent(self)
        self.dispatcher = build_dispatcher(config, store, self.pools, reactor)
        self.keyring, self.limits, audit = build_policy(config, store, reactor)
        self.outbound = build_outbound(store, self.keyring, self.limits, audit,
                                       self.dispatcher, reactor,
                                       config.log.debug_text_agencies,
                                       email_fallback=(EmailFallback(self.directory)
                                                       if config.smtp is not None else None))
        self.outbound.use_directory(self.directory)     # national-ID recipients
        self.email = build_email(config, store, self.keyring, reactor)
        # Inbound answers citizens (HELP, 4040 checks, USSD filings' SMS) through the
        # accept path, which is built over the dispatcher that the binds feed.
        inbound.use_outbound(self.outbound)
        inbound.use_authenticity(build_authenticity(config, store, self.outbound,
                                                    self.keyring, reactor))
        self.ussd = build_ussd(config, store, self.inbox, self.outbound, reactor)
        inbound.use_ussd(self.ussd, self.pools,
                         {op.name: settings_from(op.ussd) for op in config.operators})
        self.ussd.start()
        self.broadcasts, self.feeder = build_broadcasts(
            store, self.keyring, self.limits, self.outbound, self.dispatcher, reactor)
        self.app_keyring, self.app_limits, national_inbox = build_national_inbox(
            config, store, self.inbox, self.directory, audit, reactor)
        self.api = build_api(self.outbound, store, self.keyring, audit, self.health, reactor,
                             self.broadcasts, national_inbox, self.app_keyring,
                             self.app_limits)
        self.http_factory = build_http(config, self.api, reactor)
        build_housekeeping(config, store, reactor).setServiceParent(self)
        build_gauges(store, self.keyring, reactor).setServiceParent(self)

    def _listen(self):
        config, reactor = self.config, self.reactor
        host, port = config.http_listen
        self.http_port = listen_tcp(reactor, port, self.http_factory, host,
                                    self.listen_settings["http"], backlog=1024)
        if config.metrics_listen:
            self.metrics_port = listen_metrics(reactor, *config.metrics_listen,
                                               setting=self.listen_settings["metrics"])
        if config.admin_listen:
            admin = HTTPFactory(AdminAPI(self.status, self.reload_for_admin).router,
                                clock=reactor, max_connections=16)
            admin_host, admin_port = config.admin_listen
            self.admin_port = listen_tcp(reactor, admin_port, admin, admin_host,
                                         self.listen_settings["admin"])
        log.info("agency API on http://%s:%d/ with %d operators, %d agencies", host,
                 self.http_port.getHost().port, len(self.pools), len(config.agencies))

    @inlineCallbacks
    def stopService(self):
        log.info("stopping: no new requests, finishing in-flight PDUs")
        self.notifier.stopping()
        for port in (self.http_port, self.metrics_port, self.admin_port):
            if port is not None:
                yield port.stopListening()
        if self.http_factory is not None:
            # Requests already received are answered (their messages stored) first.
            yield bounded(self.reactor, self.http_factory.stop(), HTTP_DRAIN_S)
        self.feeder.stop()
        self.dispatcher.stop_claiming()
        if self.ussd is not None:
            yield self.ussd.stop()
        yield super().stopService()        # binds drain their windows and unbind
        yield self.dispatcher.release_and_flush()
        self.inbound.stop()
        yield self.webhooks.stop()
        if self.email is not None:
            yield bounded(self.reactor, self.email.stop(), HTTP_DRAIN_S)
        if isinstance(self.directory, HttpDirectory):
            yield self.directory.close()   # its kept-alive connections
        yield self.store.close()
        self.store_lock.release()
        self.notifier.stop_watchdog()
        log.info("stopped cleanly")

    # queries and reload ------------------------------------------------------------
    def health(self):
        return {op.name: {"bound": self.pools[op.name].bound_count(), "binds": op.binds}
                for op in self.config.operators}

    def status(self):
        """Deferred[the admin endpoint's status document]: binds, queue per priority."""
        d = self.store.queue_summary(self.reactor.seconds())
        d.addCallback(lambda summary: status_document(
            self.health(), summary, self.reactor.seconds(), self.daemon_pid()))
        return d

    def daemon_pid(self):
        """The pid status shows: the process to signal (SIGHUP, SIGTERM) for the daemon."""
        return os.getpid()

    def reload_for_admin(self):
        """reload(), as the admin endpoint answers it: (reloaded, why not)."""
        reloaded = self.reload()
        return reloaded, None if reloaded else self.reload_problem

    def reload(self):
        """SIGHUP (or `payam-gateway reload`): agencies, partner apps, routing rules,
        USSD menus and the directory file anew; on any error keep the old ones. systemd hears RELOADING=1, then READY=1."""
        self.notifier.reloading()
        try:
            return self._reload()
        finally:
            self.notifier.ready()

    def _reload(self):
        config = self.config
        try:
            agencies = load_agencies(config.agencies_path)
            routing = load_routing(config.routing_rules_path,
                                   {op.name for op in config.operators})
            menus = (load_ussd_menus(config.ussd_menus_path, agencies)
                     if config.ussd_menus_path else ())
            apps = load_apps(config.apps_path, agencies) if config.apps_path else ()
            citizens = (load_directory_file(config.directory.path)
                        if config.directory is not None and config.directory.path else None)
        except Exception as error:  # ConfigErrors carries every file:line problem
            log.error("reload refused, keeping the running configuration:\n%s", error)
            self.reload_problem = str(error)
            return False
        self.keyring.update(agencies)
        self.app_keyring.update(apps)
        self.app_limits.update(apps)
        self.limits.update(agencies)
        self.inbound.update_agencies(agencies)
        self.webhooks.update_agencies(agencies)
        self.dispatcher.set_router(OperatorRouter(routing))
        self.ussd.update(menus)
        self.ussd.filing.update_agencies(agencies)
        if citizens is not None:
            self.directory.update(citizens)
        log.info("reloaded %d agencies, %d routing rules and %d USSD menus", len(agencies),
                 len(routing.rules), len(menus))
        return True


def listen_metrics(reactor, host, port, setting="metrics.listen"):
    from prometheus_client.twisted import MetricsResource
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    root = Resource()
    root.putChild(b"metrics", MetricsResource())
    return listen_tcp(reactor, port, Site(root), host, setting)
