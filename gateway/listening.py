"""Listening on a configured address, with a refusal that names the setting.

A port in use at start is a configuration problem, not a bug: the operator is told in
one line which setting to change (`http.listen in gateway.yaml`, the demo's
`--http-port`), never given a traceback.
"""

from twisted.internet.error import CannotListenError


class ListenFailed(Exception):
    """A configured address could not be listened on."""

    def __init__(self, setting, host, port, reason):
        super().__init__(setting, host, port, reason)
        self.setting, self.host, self.port, self.reason = setting, host, port, reason

    def __str__(self):
        return (f"cannot listen on {self.host}:{self.port} ({self.reason}): change "
                f"{self.setting}, or stop what is using that port")


def listen_tcp(reactor, port, factory, host, setting, **options):
    """reactor.listenTCP, raising ListenFailed that names `setting` instead."""
    try:
        return reactor.listenTCP(port, factory, interface=host, **options)
    except CannotListenError as error:
        raise ListenFailed(setting, host, port, reason(error)) from None


def reason(error):
    socket_error = error.socketError
    text = getattr(socket_error, "strerror", None) or str(socket_error)
    if getattr(socket_error, "errno", None) == 98 or "in use" in text.lower():
        return "address already in use"
    return text.lower()
