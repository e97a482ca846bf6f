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

from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, inlineCallbacks

from gateway.config.load import load_agencies, load_routing
from gateway.dispatch import Dispatcher
from gateway.housekeeping import housekeeping_service
from gateway.http.api import AgencyAPI
from gateway.http.server import HTTPFactory
from gateway.outbound.accept import Outbound
from gateway.inbound import InboundClassifier
from gateway.inbox.filing import Inbox
from gateway.policy.audit import AuditLog
from gateway.policy.auth import KeyRing
from gateway.policy.limits import AgencyLimits
from gateway.dispatch.routing import OperatorRouter
from gateway.smpp.pool import OperatorPool
from gateway.store.store import Store
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


def build_inbox(store):
    """The agencies' inboxes: SMS replies, USSD filings and app replies are filed here."""
    return Inbox(store)


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


def build_outbound(store, keyring, limits, audit, dispatcher, reactor):
    """The accept path every channel calls; accepted messages wake the dispatcher."""
    return Outbound(store, limits, audit, clock=reactor,
                    agencies=lambda: keyring.agencies, route_of=dispatcher.route_of,
                    on_accepted=dispatcher.wake)


def build_api(outbound, store, keyring, audit, health, reactor):
    return AgencyAPI(outbound, store, keyring, audit, clock=reactor, health=health)


def build_http(config, api, reactor):
    return HTTPFactory(api.router, clock=reactor, max_connections=config.http_max_connections)


def build_housekeeping(config, store, reactor):
    return housekeeping_service(store, reactor, config.retention)


class GatewayService(MultiService):
    def __init__(self, config, reactor, create_store=False):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.create_store = create_store     # begin an empty store where one existed
        self.store = None
        self.pools = {}
        self.dispatcher = None
        self.keyring = None
        self.limits = None
        self.outbound = None
        self.api = None
        self.http_factory = None
        self.http_port = None
        self.metrics_port = None
        self.webhooks = None

    # lifecycle -----------------------------------------------------------------
    def startService(self):
        # store → binds → dispatcher → HTTP (the module docstring says why)
        self.store = build_store(self.config, self.reactor, create=self.create_store)
        self._build()
        super().startService()             # the children: binds, then housekeeping
        self.inbound.start()               # the MO intake's sweep (partial sets)
        self.webhooks.start()              # pushes left pending by the last run
        self.dispatcher.start()
        self._listen()

    def _build(self):
        """Every piece over the open store; pools and housekeeping become children."""
        config, reactor, store = self.config, self.reactor, self.store
        self.inbox = build_inbox(store)
        self.webhooks = build_webhooks(config, store, self.inbox, reactor)
        self.inbound = inbound = build_inbound(config, store, self.inbox, reactor)
        self.pools = build_pools(config, inbound, reactor)
        for pool in self.pools.values():
            pool.setServiceParent(self)
        self.dispatcher = build_dispatcher(config, store, self.pools, reactor)
        self.keyring, self.limits, audit = build_policy(config, store, reactor)
        self.outbound = build_outbound(store, self.keyring, self.limits, audit,
                                       self.dispatcher, reactor)
        # Inbound answers citizens (HELP, 4040 checks, USSD filings' SMS) through the
        # accept path, which is built over the dispatcher that the binds feed.
        inbound.use_outbound(self.outbound)
        self.api = build_api(self.outbound, store, self.keyring, audit, self.health, reactor)
        self.http_factory = build_http(config, self.api, reactor)
        build_housekeeping(config, store, reactor).setServiceParent(self)

    def _listen(self):
        config, reactor = self.config, self.reactor
        host, port = config.http_listen
        self.http_port = reactor.listenTCP(port, self.http_factory, interface=host,
                                           backlog=1024)
        if config.metrics_listen:
            self.metrics_port = listen_metrics(reactor, *config.metrics_listen)
        log.info("agency API on http://%s:%d/ with %d operators, %d agencies", host,
                 self.http_port.getHost().port, len(self.pools), len(config.agencies))

    @inlineCallbacks
    def stopService(self):
        log.info("stopping: no new requests, finishing in-flight PDUs")
        for port in (self.http_port, self.metrics_port):
            if port is not None:
                yield port.stopListening()
        if self.http_factory is not None:
            # Requests already received are answered (their messages stored) first.
            yield bounded(self.reactor, self.http_factory.stop(), HTTP_DRAIN_S)
        self.dispatcher.stop_claiming()
        yield super().stopService()        # binds drain their windows and unbind
        yield self.dispatcher.release_and_flush()
        self.inbound.stop()
        yield self.webhooks.stop()
        yield self.store.close()
        log.info("stopped cleanly")

    # queries and reload ------------------------------------------------------------
    def health(self):
        return {op.name: {"bound": self.pools[op.name].bound_count(), "binds": op.binds}
                for op in self.config.operators}

    def reload(self):
        """SIGHUP: agencies and routing rules anew; on any error keep the old ones."""
        config = self.config
        try:
            agencies = load_agencies(config.agencies_path)
            routing = load_routing(config.routing_rules_path,
                                   {op.name for op in config.operators})
        except Exception as error:  # ConfigErrors carries every file:line problem
            log.error("reload refused, keeping the running configuration:\n%s", error)
            return False
        self.keyring.update(agencies)
        self.limits.update(agencies)
        self.inbound.update_agencies(agencies)
        self.webhooks.update_agencies(agencies)
        self.dispatcher.set_router(OperatorRouter(routing))
        log.info("reloaded %d agencies and %d routing rules", len(agencies), len(routing.rules))
        return True


def listen_metrics(reactor, host, port):
    from prometheus_client.twisted import MetricsResource
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    root = Resource()
    root.putChild(b"metrics", MetricsResource())
    return reactor.listenTCP(port, Site(root), interface=host)
