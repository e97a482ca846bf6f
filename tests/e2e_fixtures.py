"""What the end-to-end tests share beyond daemon_harness: a small SMTP server in this
process and the module-scoped `sim`, `receiver` and `smtp` fixtures (import the ones a test
module uses; each importing module gets its own)."""

import socketserver
import threading

import pytest

from daemon_harness import Simulator
from webhook_receiver import WebhookReceiver


class ThreadedSmtp:
    """Just enough SMTP (EHLO, MAIL, RCPT, DATA, QUIT) to take messages: each kept as
    (MAIL FROM, [RCPT TO], raw bytes)."""

    def __init__(self):
        self.received = []
        received = self.received

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"220 test ESMTP\r\n")
                sender, recipients = None, []
                while True:
                    line = self.rfile.readline(1000)
                    if not line:
                        return
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        self.wfile.write(b"250 test\r\n")
                    elif verb == b"MAIL":
                        sender = line.split(b":", 1)[1].strip().strip(b"<>").decode()
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == b"RCPT":
                        recipients.append(line.split(b":", 1)[1].strip().strip(b"<>")
                                          .decode())
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == b"DATA":
                        self.wfile.write(b"354 go\r\n")
                        lines = []
                        while (data := self.rfile.readline(100_000)) not in (b".\r\n", b""):
                            lines.append(data[1:] if data.startswith(b"..") else data)
                        received.append((sender, recipients, b"".join(lines)))
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def smtp():
    server = ThreadedSmtp()
    yield server
    server.close()


@pytest.fixture(scope="module")
def sim():
    simulator = Simulator("--receipt-delay", "0.05")
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def receiver():
    webhook = WebhookReceiver()
    yield webhook
    webhook.close()
