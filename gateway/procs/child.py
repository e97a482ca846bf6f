"""What a child process is told by the supervisor, and how it answers.

The environment names the child's role and the descriptors it inherited: the HTTP
socket (workers), the wake-up pipe's end, and a pipe back to the supervisor on which
the child says READY once it serves.  Children never speak to systemd themselves.
"""

import ctypes
import json
import logging
import os
import signal

log = logging.getLogger("payam.procs.child")

ENV = "PAYAM_CHILD"             # JSON: role, index, workers, run_dir, fds, config source
READY_FD = 3
LISTEN_FD = 4
WAKE_FD = 5
PR_SET_PDEATHSIG = 1


def child_settings(environ=None):
    """The supervisor's JSON for this process, or None when it is no child."""
    value = (os.environ if environ is None else environ).get(ENV)
    return json.loads(value) if value else None


def die_with_parent():
    """SIGTERM when the supervisor dies however it dies (SIGKILL too): a child left
    behind would go on writing to a store another daemon may take."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("cannot ask to be stopped with the supervisor (no prctl)")
    if os.getppid() == 1:              # it died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


class ChildNotifier:
    """gateway.systemd.Notifier's face for a child: READY goes to the supervisor (which
    tells systemd once every child is), the rest is the supervisor's to say."""

    enabled = True

    def __init__(self, fd=READY_FD):
        self.fd = fd
        self._said = False

    def ready(self, status=None):
        if self._said:
            return
        self._said = True
        try:
            os.write(self.fd, b"READY\n")
        except OSError as error:
            log.warning("cannot tell the supervisor this process is ready: %s", error)

    def reloading(self):
        pass

    def stopping(self):
        pass

    def start_watchdog(self, reactor):
        pass

    def stop_watchdog(self):
        pass
