"""`payam-gateway` console script: run, demo, check-config, smsc-sim, hash-key."""

import argparse
import contextlib
import logging
import signal
import sys

log = logging.getLogger("payam.cli")

# `run` and `demo` exit with this when the store needs a person (damaged, or missing
# where one existed): systemd's RestartPreventExitStatus keeps it from restarting.
EXIT_STORE = 65


def setup_logging(level):
    """Stderr logging with repeated warnings and errors aggregated (gateway.logsetup);
    Twisted's log events go through the same handler.  Returns the RepeatFilter."""
    from gateway import logsetup
    repeats = logsetup.install(level, sys.stderr)
    from twisted.logger import STDLibLogObserver, globalLogBeginner
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    return repeats


def load_or_exit(path):
    from gateway.config.load import check_config, load_gateway_config
    problems = check_config(path)
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        sys.exit(2)
    return load_gateway_config(path)


def serve(reactor, service, *, announce=None):
    """Run the service until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code."""
    outcome = {"code": 0, "stopping": False}

    def stop():
        # A second SIGTERM (or Ctrl-C) while stopping must not make the reactor raise.
        if not outcome["stopping"]:
            outcome["stopping"] = True
            reactor.stop()

    def start():
        from gateway.store.guard import StoreUnusable
        try:
            service.startService()
        except StoreUnusable as e:
            log.error("%s", e)         # one line: the file, the problem, what to do
            outcome["code"] = EXIT_STORE if e.lasting else 1
            stop()
            return
        except Exception:
            log.exception("could not start")
            outcome["code"] = 1
            stop()
            return
        if announce:
            announce()

    def stop_once(*_):
        reactor.callFromThread(stop)

    def take_signals():
        # After the reactor has put in its own SIGTERM/SIGINT handlers, which stop twice.
        for name in ("SIGTERM", "SIGINT"):
            signal.signal(getattr(signal, name), stop_once)

    reactor.callWhenRunning(take_signals)
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: service.running and service.stopService())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP,
                      lambda *_: reactor.callFromThread(service.reload))
    reactor.run()
    return outcome["code"]


@contextlib.contextmanager
def logging_for_the_reactor(level):
    """setup_logging, with the aggregated summaries flushed every second on the reactor
    and once more at exit (run the reactor inside it)."""
    from twisted.internet import reactor
    from gateway.logsetup import flush_periodically
    repeats = setup_logging(level)
    flushing = flush_periodically(repeats, reactor)
    try:
        yield reactor
    finally:
        if flushing.running:
            flushing.stop()
        repeats.flush(everything=True)


def cmd_run(args):
    config = load_or_exit(args.config)
    with logging_for_the_reactor(args.log_level) as reactor:
        from gateway.service import GatewayService
        return serve(reactor, GatewayService(config, reactor,
                                             create_store=args.create_store))


def cmd_demo(args):
    with logging_for_the_reactor(args.log_level):
        from gateway.demo.run import run_demo
        return run_demo(args, serve)


def cmd_check_config(args):
    from gateway.config.load import check_config, load_gateway_config
    from gateway.store.guard import problems as store_problems
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    problems = check_config(args.config)
    if not problems:
        # `run` would also open the store: a damaged or missing one is named here too.
        config = load_gateway_config(args.config)
        problems = [f"{config.path}: store.path: {problem}"
                    for problem in store_problems(config.store_path)]
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 2
    print(f"{args.config}: OK")
    return 0


def cmd_smsc_sim(args, rest):
    from gateway.simulator.main import run_simulator
    return run_simulator(rest)


def cmd_hash_key(args):
    from gateway.policy.auth import generate_key
    key, hashed = generate_key()
    print(f"key:  {key}")
    print(f"hash: {hashed}")
    print(f'paste into the agency\'s keys list:  keys: ["{hashed}"]')
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="payam-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the daemon, in the foreground")
    run.add_argument("-c", "--config", default="config/gateway.yaml")
    run.add_argument("--log-level", default="info")
    run.add_argument("--create-store", action="store_true",
                     help="begin an empty store where one existed but is now missing "
                          "(a first start needs no flag)")

    demo = sub.add_parser("demo", help="the daemon on embedded defaults with the SMSC simulator")
    demo.add_argument("--http-port", type=int, default=8080)
    demo.add_argument("--smsc-port", type=int, default=2775)
    demo.add_argument("--control-port", type=int, default=8775,
                      help="the simulator's control API (0: any free port)")
    demo.add_argument("--metrics-port", type=int, default=9108,
                      help="Prometheus /metrics (0: any free port)")
    demo.add_argument("--var", default="var", help="directory for the demo's SQLite store")
    demo.add_argument("--log-level", default="info")
    demo.add_argument("--create-store", action="store_true",
                      help="begin an empty demo store where one existed but is now missing")

    check = sub.add_parser("check-config", help="validate everything `run` would load")
    check.add_argument("-c", "--config", default="config/gateway.yaml")

    sub.add_parser("smsc-sim", help="the built-in SMSC simulator alone", add_help=False)
    sub.add_parser("hash-key", help="a new API key and the hash line for the agencies file")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["smsc-sim"]:
        # The simulator owns its own options (see `payam-gateway smsc-sim --help`).
        return cmd_smsc_sim(None, argv[1:])
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "demo": cmd_demo, "check-config": cmd_check_config,
                "hash-key": cmd_hash_key}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
