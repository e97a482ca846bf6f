"""`payam-gateway` console script: run, demo, check-config, smsc-sim, hash-key, backup,
inbox."""

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


def cmd_backup(args):
    from gateway.store.backup import BackupFailed, backup
    config = load_or_exit(args.config)
    try:
        copy = backup(config.store_path, args.output)
    except BackupFailed as e:
        print(f"backup: {e}", file=sys.stderr)
        return 1
    print(f"backed up store {copy.store_id} ({copy.messages} messages) from "
          f"{config.store_path} to {copy.path}: integrity check ok")
    return 0


def cmd_inbox(args):
    """List an inbox (an agency's, or the unrouted box) from the store, read-only: safe
    while the daemon runs. Citizens' numbers are masked unless --full-numbers."""
    import json
    import sqlite3

    from gateway.inbox.document import iso_time
    from gateway.numbers import mask_msisdn
    from gateway.store.operations import list_inbox
    config = load_or_exit(args.config)
    if args.agency is None and not args.unrouted:
        print("inbox: say which: --unrouted or --agency ID", file=sys.stderr)
        return 2
    if args.agency is not None and args.agency not in {a.id for a in config.agencies}:
        print(f"inbox: no agency {args.agency!r} in {config.agencies_path}", file=sys.stderr)
        return 2
    try:
        conn = sqlite3.connect(f"file:{config.store_path}?mode=ro", uri=True)
        messages = list_inbox(conn, args.agency, args.after, args.limit)
    except sqlite3.Error as e:
        print(f"inbox: cannot read the store {config.store_path}: {e}", file=sys.stderr)
        return 1
    show = (lambda n: n) if args.full_numbers else mask_msisdn
    for m in messages:
        row = {"seq": m.seq, "id": m.id, "received_at": iso_time(m.received_at),
               "operator": m.operator, "from": show(m.citizen), "to": m.number,
               "channel": m.channel, "partial": m.partial, "text": m.text}
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            print(f"{m.seq}\t{row['received_at']}\t{m.operator or '-'}\t{row['from']}"
                  f"\t→ {m.number}\t{'[partial] ' if m.partial else ''}{m.text}")
    if not messages and not args.json:
        print("(empty)", file=sys.stderr)
    return 0


def version():
    """The installed distribution's version (what pip shows), else the package's own."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version
    try:
        return installed_version("payam-gateway")
    except PackageNotFoundError:
        from gateway import __version__
        return __version__


DEFAULT_CONFIG = "config/gateway.yaml"


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default; a flag's default reads "off"."""

    def _get_help_string(self, action):
        if action.nargs == 0 and action.default is False:
            return action.help + " (default: off)"
        return super()._get_help_string(action)


def build_parser():
    formatter = HelpWithDefaults
    parser = argparse.ArgumentParser(prog="payam-gateway", description=__doc__,
                                     formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help, **kwargs):
        return sub.add_parser(name, help=help, description=help, formatter_class=formatter,
                              **kwargs)

    def config_option(p):
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="FILE",
                       help="gateway.yaml; the files it names are relative to it")

    def log_level_option(p):
        p.add_argument("--log-level", default="info", metavar="LEVEL",
                       help="least severe level logged to stderr: debug, info, warning, "
                            "error")

    run = command("run", "the daemon, in the foreground")
    config_option(run)
    log_level_option(run)
    run.add_argument("--create-store", action="store_true",
                     help="begin an empty store where one existed but is now missing "
                          "(a first start needs no flag)")

    demo = command("demo", "the daemon on embedded defaults with the SMSC simulator")
    demo.add_argument("--http-port", type=int, default=8080, help="the agency API")
    demo.add_argument("--smsc-port", type=int, default=2775,
                      help="the built-in SMSC simulator's SMPP port")
    demo.add_argument("--control-port", type=int, default=8775,
                      help="the simulator's control API (0: any free port)")
    demo.add_argument("--metrics-port", type=int, default=9108,
                      help="Prometheus /metrics (0: any free port)")
    demo.add_argument("--var", default="var", metavar="DIR",
                      help="directory for the demo's SQLite store")
    log_level_option(demo)
    demo.add_argument("--create-store", action="store_true",
                      help="begin an empty demo store where one existed but is now missing")

    check = command("check-config", "validate everything `run` would load")
    config_option(check)

    command("smsc-sim", "the built-in SMSC simulator alone "
                        "(its options: payam-gateway smsc-sim --help)", add_help=False)
    command("hash-key", "a new API key and the hash line for the agencies file")

    backup = command("backup", "a verified copy of the store, taken safely while the "
                               "daemon runs (refuses to overwrite OUTPUT)")
    config_option(backup)
    backup.add_argument("output", metavar="OUTPUT", help="the new file to write the copy to")

    inbox = command("inbox", "list citizens' messages kept in an inbox (admins): the "
                             "unrouted box or an agency's; numbers masked by default")
    config_option(inbox)
    which = inbox.add_mutually_exclusive_group()
    which.add_argument("--unrouted", action="store_true",
                       help="messages to 4040 numbers nobody owns (and others kept for "
                            "admins)")
    which.add_argument("--agency", metavar="ID", help="that agency's inbox")
    inbox.add_argument("--after", type=int, default=0, metavar="SEQ",
                       help="only messages after this position (the first column)")
    inbox.add_argument("--limit", type=int, default=100, help="messages listed at most")
    inbox.add_argument("--full-numbers", action="store_true",
                       help="show citizens' numbers whole (they are personal data)")
    inbox.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["smsc-sim"]:
        # The simulator owns its own options (see `payam-gateway smsc-sim --help`).
        return cmd_smsc_sim(None, argv[1:])
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "demo": cmd_demo, "check-config": cmd_check_config,
                "hash-key": cmd_hash_key, "backup": cmd_backup, "inbox": cmd_inbox}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
