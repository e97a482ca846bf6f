"""The split daemon's entry points for `payam-gateway run` (and `demo`): the
supervisor, and a child making its part from what the supervisor handed it."""

import os
import signal
import sys

from gateway.procs.child import (
    LISTEN_FD, READY_FD, WAKE_FD, ChildNotifier, die_with_parent)


def log_args(args):
    found = ["--log-level", args.log_level]
    if args.log_format:
        found += ["--log-format", args.log_format]
    return found


def supervisor_for(config, reactor, workers, args, source, **options):
    from gateway.procs.supervisor import Supervisor
    source = {**source, "create_store": bool(getattr(args, "create_store", False))}
    return Supervisor(config, reactor, workers=workers, source=source,
                      log_args=log_args(args), **options)


def child_config(source):
    """The configuration the supervisor runs, made again here from its source."""
    if source["kind"] == "demo":
        from gateway.demo.run import demo_config
        return demo_config(**source["demo"])
    from gateway.config.load import load_gateway_config
    return load_gateway_config(source["path"])


def _stop_before_serving(signum, frame):
    # Stopped while still starting (the reactor's handlers are not in yet): nothing
    # was taken, so leave as cleanly as a stopped child, exit 0.
    sys.exit(0)


def run_child(settings, args, serve, logging_for_the_reactor):
    signal.signal(signal.SIGTERM, _stop_before_serving)
    die_with_parent()
    # Its own process group: a terminal's Ctrl-C reaches the supervisor alone, which
    # stops the children in order (workers, then the dispatcher).
    os.setpgrp()
    os.set_inheritable(READY_FD, False)
    config = child_config(settings["source"])
    fmt = args.log_format or config.log.format
    with logging_for_the_reactor(args.log_level, fmt) as reactor:
        notifier = ChildNotifier(READY_FD)
        if settings["role"] == "dispatcher":
            from gateway.procs.dispatcher import DispatcherProcess
            service = DispatcherProcess(config, reactor, run_dir=settings["run_dir"],
                                        wake_fd=WAKE_FD, notifier=notifier,
                                        create_store=settings["source"]["create_store"])
        else:
            from gateway.procs.worker import HTTPWorker
            service = HTTPWorker(config, reactor, index=settings["index"],
                                 workers=settings["workers"], run_dir=settings["run_dir"],
                                 listen_fd=LISTEN_FD, wake_fd=WAKE_FD, notifier=notifier)
        return serve(reactor, service)
