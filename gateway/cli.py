"""`payam-gateway` console script: run, demo, check-config, smsc-sim, hash-key, backup,
status, reload, ussd-try, audit, inbox."""

import argparse
import contextlib
import json
import logging
import signal
import sys

log = logging.getLogger("payam.cli")

# `run` and `demo` exit with this when the store needs a person (damaged, or missing
# where one existed): systemd's RestartPreventExitStatus keeps it from restarting.
EXIT_STORE = 65
# ... and with this when another daemon holds the store's lock (EX_TEMPFAIL: it may be
# stopping; systemd restarts after RestartSec).
EXIT_LOCKED = 75


def setup_logging(level, fmt="auto"):
    """Stderr logging, one event per line (JSON unless stderr is a terminal, or as
    `fmt` says), with repeated warnings and errors aggregated (gateway.logsetup);
    Twisted's log events go through the same handler as logger payam.twisted.
    Returns the RepeatFilter."""
    from gateway import logsetup
    repeats = logsetup.install(level, sys.stderr, fmt=fmt)
    from twisted.logger import globalLogBeginner
    globalLogBeginner.beginLoggingTo([logsetup.TwistedEvents()], redirectStandardIO=False)
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
        from gateway.listening import ListenFailed
        from gateway.store.guard import StoreUnusable
        from gateway.store.lock import StoreLocked
        try:
            service.startService()
        except StoreUnusable as e:
            log.error("%s", e)         # one line: the file, the problem, what to do
            outcome["code"] = (EXIT_LOCKED if isinstance(e, StoreLocked)
                               else EXIT_STORE if e.lasting else 1)
            stop()
            return
        except ListenFailed as e:
            log.error("%s", e)         # one line naming the setting to change
            outcome["code"] = 1
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
def logging_for_the_reactor(level, fmt="auto"):
    """setup_logging, with the aggregated summaries flushed every second on the reactor
    and once more at exit (run the reactor inside it)."""
    from twisted.internet import reactor
    from gateway.logsetup import flush_periodically
    from gateway.reactor_events import poll_without_log_context
    repeats = setup_logging(level, fmt)
    poll_without_log_context(reactor)
    flushing = flush_periodically(repeats, reactor)
    try:
        yield reactor
    finally:
        if flushing.running:
            flushing.stop()
        repeats.flush(everything=True)


def cmd_run(args):
    from gateway.procs.child import child_settings
    settings = child_settings()
    if settings is not None:              # a process of the split daemon (gateway/procs)
        from gateway.procs.run import run_child
        return run_child(settings, args, serve, logging_for_the_reactor)
    config = load_or_exit(args.config)
    fmt = args.log_format or config.log.format
    with logging_for_the_reactor(args.log_level, fmt) as reactor:
        from gateway.procs.supervisor import workers_for
        workers = workers_for(config.http_workers)
        if workers == 0:
            from gateway.service import GatewayService
            return serve(reactor, GatewayService(config, reactor,
                                                 create_store=args.create_store))
        from gateway.procs.run import supervisor_for
        service = supervisor_for(config, reactor, workers, args,
                                 {"kind": "run", "path": config.path})
        return serve(reactor, service) or service.exit_code


def cmd_demo(args):
    with logging_for_the_reactor(args.log_level, args.log_format or "auto"):
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
    passed = None
    if not problems and args.ussd_tests:
        passed, problems = run_ussd_tests(load_gateway_config(args.config))
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 2
    print(f"{args.config}: OK" + ("" if passed is None else f", {passed} USSD tests passed"))
    return 0


def run_ussd_tests(config):
    """(passed, problems) of the menu tests under <ussd_menus>/tests/."""
    from gateway.config.ussd_tests_file import read_ussd_tests
    from gateway.ussd.menu_tests import run_tests
    if not config.ussd_menus_path:
        return 0, [f"{config.path}: --ussd-tests: gateway.yaml names no ussd_menus"]
    errors = []
    tests = read_ussd_tests(config.ussd_menus_path, errors)
    if errors:
        return 0, [str(error) for error in errors]
    return run_tests(config.ussd_menus, tests)


def cmd_ussd_try(args):
    from twisted.internet import task
    from gateway.ussd.dynamic import DynamicStates
    from gateway.ussd.terminal import try_menu
    config = load_or_exit(args.config)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    outcome = []

    def main(reactor):
        d = try_menu(reactor, config.ussd_menus, args.dial, dynamic=DynamicStates(reactor))
        return d.addCallback(outcome.append)
    try:
        task.react(main)
    except SystemExit as done:
        if done.code:
            return done.code
    return outcome[0] if outcome else 1


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


def ask_daemon(args, command, method, path):
    """The running daemon's answer on its admin endpoint, or None (said on stderr)."""
    from gateway.admin.client import Unreachable, ask
    config = load_or_exit(args.config)
    try:
        return ask(config.admin_listen, method, path)
    except Unreachable as e:
        print(f"{command}: {e}", file=sys.stderr)
        return None


def cmd_status(args):
    from gateway.admin.client import format_status
    document = ask_daemon(args, "status", "GET", "/status")
    if document is None:
        return 1
    print(json.dumps(document, ensure_ascii=False, indent=2) if args.json
          else format_status(document))
    return 0


def cmd_reload(args):
    answer = ask_daemon(args, "reload", "POST", "/reload")
    if answer is None:
        return 1
    if answer["reloaded"]:
        print("reloaded agencies, routing rules and USSD menus")
        return 0
    print(f"reload refused, the daemon keeps its running configuration:\n"
          f"{answer['problem']}", file=sys.stderr)
    return 2


_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text, now):
    """'90s', '15m', '1h', '2d', '1w' ago, or an ISO date/time ('2025-03-01',
    '2025-03-01T08:30', UTC unless it says) → a Unix time; ValueError otherwise."""
    from datetime import datetime, timezone
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in _SINCE_UNITS:
        return now - int(text[:-1]) * _SINCE_UNITS[text[-1]]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since: {text!r} is neither a duration (90s, 15m, 1h, 2d, 1w) "
                         f"nor an ISO date or time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def audit_line(at, event, agency, detail):
    """One audit row for people: time (UTC), event, agency, then the detail's fields."""
    from datetime import datetime, timezone
    when = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    fields = " ".join(f"{key}={value}" for key, value in detail.items())
    return f"{when}  {event}  agency={agency or '-'}  {fields}".rstrip()


def cmd_audit(args):
    import json
    import time
    from gateway.numbers import InvalidNumber, normalize_msisdn
    from gateway.store import audit_trail
    config = load_or_exit(args.config)
    try:
        since = parse_since(args.since, time.time()) if args.since else None
        number = normalize_msisdn(args.number) if args.number else None
    except (ValueError, InvalidNumber) as e:
        print(f"audit: {e}", file=sys.stderr)
        return 2
    import sqlite3
    try:
        conn = audit_trail.open_read_only(config.store_path)
    except (OSError, sqlite3.Error) as e:   # a missing or unreadable store: one line
        print(f"audit: cannot read store {config.store_path}: {e}", file=sys.stderr)
        return 1
    shown = 0
    try:
        for id_, at, event, agency, detail in audit_trail.rows(
                conn, since=since, agency=args.agency, refused=args.refused, number=number):
            if args.json:
                print(json.dumps({"id": id_, "at": at, "event": event, "agency": agency,
                                  "detail": detail}, ensure_ascii=False))
            else:
                print(audit_line(at, event, agency, detail))
            shown += 1
    except sqlite3.Error as e:
        print(f"audit: cannot read store {config.store_path}: {e}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if not args.json:
        print(f"{shown} audit record(s)", file=sys.stderr)
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
        if action.default is None and "(default: " in (action.help or ""):
            return action.help                 # the help says where the default comes from
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
        p.add_argument("--log-format", choices=("auto", "json", "text"), default=None,
                       help="one JSON object or one text line per event; auto: JSON "
                            "unless stderr is a terminal (default: log.format of "
                            "gateway.yaml, else auto)")

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
    demo.add_argument("--admin-port", type=int, default=9109,
                      help="the admin endpoint for status and reload (0: any free port)")
    demo.add_argument("--var", default="var", metavar="DIR",
                      help="directory for the demo's SQLite store")
    log_level_option(demo)
    demo.add_argument("--create-store", action="store_true",
                      help="begin an empty demo store where one existed but is now missing")

    check = command("check-config", "validate everything `run` would load")
    config_option(check)
    check.add_argument("--ussd-tests", action="store_true",
                       help="also run the menu tests under <ussd_menus>/tests/*.yaml")

    try_ = command("ussd-try", "walk a USSD menu in the terminal (no SMSC, nothing stored)")
    config_option(try_)
    try_.add_argument("dial", metavar="DIAL", help="a dial string, e.g. '*4*0135#' or "
                                                   "'*4*0135*1*2#'")

    command("smsc-sim", "the built-in SMSC simulator alone "
                        "(its options: payam-gateway smsc-sim --help)", add_help=False)
    command("hash-key", "a new API key and the hash line for the agencies file")

    backup = command("backup", "a verified copy of the store, taken safely while the "
                               "daemon runs (refuses to overwrite OUTPUT)")
    config_option(backup)
    backup.add_argument("output", metavar="OUTPUT", help="the new file to write the copy to")

    status = command("status", "the running daemon's binds per operator and queue per "
                               "priority, from its admin endpoint (admin.listen)")
    config_option(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    reload = command("reload", "make the running daemon reload agencies, routing rules "
                               "and USSD menus (as SIGHUP does), through its admin endpoint")
    config_option(reload)
    audit = command("audit", "print the audit trail (refused senders and links, failed "
                             "authentication, 4040 answers), oldest first; reads the "
                             "store read-only")
    config_option(audit)
    audit.add_argument("--agency", metavar="ID", help="only this agency's records "
                                                      "(default: every agency's)")
    audit.add_argument("--since", metavar="WHEN",
                       help="only records since WHEN: a duration ago (90s, 15m, 1h, 2d, "
                            "1w) or an ISO date/time in UTC (default: all kept)")
    audit.add_argument("--refused", action="store_true",
                       help="only refusals of what an agency asked (e.g. sender_refused)")
    audit.add_argument("--number", metavar="MSISDN",
                       help="only records naming this citizen's number, which rows "
                            "hold hashed (default: any)")
    audit.add_argument("--json", action="store_true", help="one JSON object per record")

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
                "hash-key": cmd_hash_key, "backup": cmd_backup, "status": cmd_status,
                "reload": cmd_reload, "ussd-try": cmd_ussd_try, "audit": cmd_audit,
                "inbox": cmd_inbox}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
