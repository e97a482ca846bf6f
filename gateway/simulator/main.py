"""`payam-gateway smsc-sim`: the simulator as a process, and `start_simulator` for in-process use.

With `--port 0` / `--control-port 0` the kernel picks the ports; the first line on stdout,
`SMSC_SIM_READY smpp=HOST:PORT control=HOST:PORT`, tells a test harness which.
"""

import argparse
import logging
import sys
from typing import NamedTuple

from gateway.simulator.behaviour import (
    ID_FORMATS,
    MO_CODINGS,
    RECEIPT_MODES,
    RECEIPT_STATES,
    Behaviour,
    BehaviourError,
)
from gateway.simulator.control import control_site
from gateway.simulator.smsc import SMSCFactory

log = logging.getLogger("payam.simulator")

DEFAULT_PORT = 2775
DEFAULT_CONTROL_PORT = 8775


class RunningSimulator(NamedTuple):
    factory: SMSCFactory
    smpp_listener: object             # IListeningPort
    control_listener: object          # IListeningPort, or None when the API is off

    @property
    def smpp_port(self):
        return self.smpp_listener.getHost().port

    @property
    def control_port(self):
        return None if self.control_listener is None else self.control_listener.getHost().port

    def stop(self):
        """Stop listening (a Deferred that fires when both ports are closed)."""
        from twisted.internet import defer
        listeners = [self.smpp_listener] + (
            [self.control_listener] if self.control_listener is not None else [])
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in listeners])


def start_simulator(reactor, host, port, control_port, behaviour=None,
                    **factory_options) -> RunningSimulator:
    """Listen for SMPP on host:port and, unless control_port is None, serve the control
    API on host:control_port. Port 0 means any free port. factory_options go to
    SMSCFactory (system_id, password, record_capacity, ...)."""
    factory = SMSCFactory(behaviour, reactor=reactor, **factory_options)
    smpp_listener = reactor.listenTCP(port, factory, interface=host)
    control_listener = None
    if control_port is not None:
        try:
            control_listener = reactor.listenTCP(control_port, control_site(factory),
                                                 interface=host)
        except Exception:
            smpp_listener.stopListening()
            raise
    return RunningSimulator(factory, smpp_listener, control_listener)


def _status(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"command_status must fit 32 bits: {text!r}")
    return value


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="payam-gateway smsc-sim",
        description="A built-in SMPP 3.4 SMSC simulator: accepts binds, answers submit_sm, "
                    "sends delivery receipts, injects MO and USSD through a control API.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)   # --help shows defaults
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="SMPP port (0: any)")
    parser.add_argument("--control-port", type=int, default=DEFAULT_CONTROL_PORT,
                        help="JSON control API port on the same host (0: any)")
    parser.add_argument("--system-id", help="accept binds only with this system_id "
                                            "(None: any)")
    parser.add_argument("--password", help="accept binds only with this password "
                                           "(None: any)")
    parser.add_argument("--id-format", choices=ID_FORMATS, default="hex",
                        help="message ids: hex, decimal, or mixed (hex resp, decimal receipt)")
    parser.add_argument("--receipts", choices=RECEIPT_MODES, default="both",
                        help="receipt text, TLVs, both, or none")
    parser.add_argument("--receipt-delay", type=float, default=0.2, metavar="SECONDS",
                        help="from submit_sm_resp to its receipt")
    parser.add_argument("--receipt-stat", choices=tuple(RECEIPT_STATES), default="DELIVRD",
                        help="stat: of the receipts")
    parser.add_argument("--undeliverable", type=float, default=0.0, metavar="FRACTION",
                        help="share of receipts that say UNDELIV")
    parser.add_argument("--throttle-every", type=int, default=0, metavar="N",
                        help="every Nth submit_sm gets ESME_RTHROTTLED")
    parser.add_argument("--throttle-rate", type=float, default=0.0, metavar="TPS",
                        help="throttle accepted submits above this rate")
    parser.add_argument("--fail-every", type=int, default=0, metavar="N",
                        help="every Nth submit_sm fails with --fail-status (0: none)")
    parser.add_argument("--fail-status", type=_status, default="0x45",
                        help="command_status of failed submits")
    parser.add_argument("--drop-after", type=int, default=0, metavar="N",
                        help="close the connection on the Nth submit_sm without answering it")
    parser.add_argument("--drop-repeat", action="store_true",
                        help="drop again after every further N submits")
    parser.add_argument("--malformed-every", type=int, default=0, metavar="N",
                        help="every Nth accepted submit_sm gets a malformed submit_sm_resp "
                             "(lying length, truncated, garbage id, wrong command in turn)")
    parser.add_argument("--ack-delay", type=float, default=0.0, metavar="SECONDS",
                        help="delay before each submit_sm_resp")
    parser.add_argument("--mo-coding", choices=MO_CODINGS, default="auto",
                        help="data_coding of injected MO texts: auto (GSM 03.38 when "
                             "it fits, else UCS2) or ucs2")
    parser.add_argument("--records", type=_positive, default=100_000,
                        help="how many accepted submits the control API remembers")
    parser.add_argument("--log-level", default="info", help="least severe level logged")
    return parser


def behaviour_from(args) -> Behaviour:
    behaviour = Behaviour(
        throttle_every=args.throttle_every, throttle_rate=args.throttle_rate,
        fail_every=args.fail_every, fail_status=args.fail_status,
        drop_after=args.drop_after, drop_repeat=args.drop_repeat,
        id_format=args.id_format, receipts=args.receipts,
        receipt_delay_s=args.receipt_delay, receipt_stat=args.receipt_stat,
        undeliverable_fraction=args.undeliverable, ack_delay_s=args.ack_delay,
        malformed_every=args.malformed_every, mo_coding=args.mo_coding)
    behaviour.validate()
    return behaviour


def _setup_logging(level):
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    logging.basicConfig(level=numeric, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from twisted.logger import STDLibLogObserver, globalLogBeginner
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)


def run_simulator(argv) -> int:
    """Run until SIGTERM / SIGINT. Returns the exit code (2 for bad options)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        behaviour = behaviour_from(args)
        _setup_logging(args.log_level)
    except (BehaviourError, ValueError) as exc:
        parser.error(str(exc))
    from twisted.internet import reactor

    try:
        running = start_simulator(
            reactor, args.host, args.port, args.control_port, behaviour,
            system_id=args.system_id, password=args.password, record_capacity=args.records)
    except Exception as exc:          # CannotListenError and friends: say why, exit 1
        print(f"smsc-sim: cannot listen: {exc}", file=sys.stderr)
        return 1
    print(f"SMSC_SIM_READY smpp={args.host}:{running.smpp_port} "
          f"control={args.host}:{running.control_port}", flush=True)
    log.info("SMSC simulator on %s:%d, control API on %s:%d",
             args.host, running.smpp_port, args.host, running.control_port)
    reactor.run()                     # installs SIGINT/SIGTERM handlers that stop it
    return 0
