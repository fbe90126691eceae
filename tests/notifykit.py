"""Real servers on 127.0.0.1 that receive notifications in tests: an aiosmtpd SMTP server
(plain, or STARTTLS with a self-signed certificate and a login) and an `http.server` webhook
receiver. Shared by the unit tests and the lab test."""

from __future__ import annotations

import socket
import ssl
import threading
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tlskit import self_signed  # noqa: F401 - offered with the servers it serves


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """What the SMTP server received: (envelope sender, recipients, parsed message)."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], EmailMessage]] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server, session, envelope):
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos),
                           message_from_bytes(envelope.content, policy=default_policy)))
        return "250 OK"


def smtp_server(inbox: Inbox, *, tls: tuple[Path, Path] | None = None,
                password: str | None = None) -> Controller:
    """A started SMTP server on 127.0.0.1 (stop it). With `tls`, STARTTLS is required, and
    with `password` too, a login (any user, that password) over it."""
    kwargs: dict = {}
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
        kwargs.update(tls_context=context, require_starttls=True)
    if password is not None:
        def authenticator(server, session, envelope, mechanism, auth_data):
            inbox.logins.append((auth_data.login.decode(), auth_data.password.decode()))
            return AuthResult(success=auth_data.password.decode() == password, handled=False)
        kwargs.update(authenticator=authenticator, auth_require_tls=tls is not None)
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


class Hook:
    """A webhook receiver answering each POST with the next of `statuses` (then 200)."""

    def __init__(self, statuses=()) -> None:
        self.statuses = list(statuses)
        self.bodies: list[tuple[str | None, bytes]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.bodies.append((self.headers.get("Content-Type"), body))
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/deploys"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
