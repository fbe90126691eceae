"""Telling people and scripts how a roll ended (design §12): a webhook POST and an email.

After a roll or rollback, each service's report whose result is in `on` goes
to the environment's channels: the webhook gets the same JSON object
`--json` prints, the mail gets `notifymessage`'s subject and body. A
notification is a courtesy on top of the deploy, not part of it: a channel
that fails is printed (one escaped line) and listed under `notifications`
in `--json`, and the exit code stays the roll's. Dry runs notify nobody, and
neither does a roll that stops before it has a report (a held lock, an
unreachable registry): the command's exit code and message are the news
there, and a CI job's own failure notice carries them.

The webhook is retried on connection errors, timeouts and 5xx answers
(a receiver restarting), never on 4xx (it will say the same again), all
within one total deadline, so a dead receiver costs at most
`WEBHOOK_TOTAL` seconds.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import requests

from dockship import deadline, notifymessage, redact
from dockship.config import Config, EmailSettings, NotifySettings
from dockship.errors import DockshipError, last_line
from dockship.report import RollReport, document

WEBHOOK_TRIES = 3
WEBHOOK_TOTAL = 30.0          # seconds for every try of one webhook delivery together
WEBHOOK_BACKOFF = 1.0         # seconds before the second try, doubled after
PASSWORD_VARIABLE = "DOCKSHIP_SMTP_PASSWORD"


@dataclass(frozen=True)
class Delivery:
    """One notification sent, or not: what `--json` lists under `notifications`."""

    kind: str               # "webhook" or "email"
    target: str             # the webhook URL redacted, or the mail's recipients
    service: str
    ok: bool
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "target": self.target, "service": self.service,
                               "ok": self.ok}
        if self.error:
            out["error"] = self.error
        return out


class WebhookFailed(DockshipError):
    pass


def deliver(config: Config, env: str, reports: Iterable[RollReport], *,
            say: Callable[[str], None] | None = None) -> list[Delivery]:
    """Send each report to the channels of `env`'s notify settings; never raises. Failures are
    printed with `say` (default: one line on stderr) and returned with the successes."""
    settings = config.environment(env).notify
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    out: list[Delivery] = []
    for report in reports:
        if report.result.value not in settings.on:
            continue
        for delivery in _channels(settings, report):
            if not delivery.ok:
                say(redact.safe(f"dockship: notification by {delivery.kind} to {delivery.target} "
                                f"failed (the roll's result stands): {delivery.error}"))
            out.append(delivery)
    return out


def with_notifications(data: dict[str, Any], deliveries: list[Delivery]) -> dict[str, Any]:
    """The `--json` object with `notifications` added (only when there were any)."""
    return {**data, "notifications": [d.to_json() for d in deliveries]} if deliveries else data


def _channels(settings: NotifySettings, report: RollReport) -> list[Delivery]:
    out = []
    if settings.webhook is not None:
        out.append(_attempt("webhook", redact.redact_url(settings.webhook), report,
                            lambda: post_webhook(settings.webhook or "", document(report.to_json()))))
    if settings.email is not None:
        email = settings.email
        out.append(_attempt("email", ", ".join(email.to), report,
                            lambda: send_mail(email, notifymessage.subject(report),
                                              notifymessage.body(report))))
    return out


def _attempt(kind: str, target: str, report: RollReport, send: Callable[[], None]) -> Delivery:
    try:
        send()
    except Exception as exc:     # any failure of a courtesy channel is reported, never raised
        return Delivery(kind, target, report.service, False, redact.safe(last_line(exc)))
    return Delivery(kind, target, report.service, True)


def post_webhook(url: str, payload: dict[str, Any], *, tries: int = WEBHOOK_TRIES,
                 total: float = WEBHOOK_TOTAL, backoff: float = WEBHOOK_BACKOFF) -> None:
    """POST `payload` as JSON, retrying connection errors and 5xx within `total` seconds;
    WebhookFailed naming the last problem otherwise."""
    redact.remember(*redact.url_secrets(url))
    shown = redact.redact_url(url)
    end = time.monotonic() + total
    problem = "no try made"
    with requests.Session() as session:
        for attempt in range(tries):
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                answer = deadline.request(session, "POST", url, what=f"webhook {shown}",
                                          total=left, json=payload, allow_redirects=False)
            except (requests.RequestException, DockshipError) as exc:
                problem = last_line(exc)
            else:
                if answer.status_code < 300:
                    return
                problem = f"answered HTTP {answer.status_code} {answer.reason}"
                if answer.status_code < 500:
                    raise WebhookFailed(f"webhook {shown} {problem} (not retried)")
            pause = backoff * 2 ** attempt
            if attempt + 1 < tries and time.monotonic() + pause < end:
                time.sleep(pause)
    raise WebhookFailed(f"webhook {shown}: {problem} (after {attempt + 1} tries)")


def message(email: EmailSettings, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = email.sender
    msg["To"] = ", ".join(email.to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=email.sender.rpartition("@")[2])
    msg.set_content(body)
    return msg


def send_mail(email: EmailSettings, subject: str, body: str, *,
              environ: dict[str, str] | None = None) -> None:
    """One mail through `email`'s relay: STARTTLS (certificate checked) when asked, a login when
    `user` is set, the password from DOCKSHIP_SMTP_PASSWORD."""
    password = (environ if environ is not None else os.environ).get(PASSWORD_VARIABLE)
    if password:
        redact.remember(password)
    if email.user and not password:
        raise DockshipError(f"email.user is set but {PASSWORD_VARIABLE} is not; set it in "
                            "dockship's environment (a CI secret)")
    with smtplib.SMTP(email.host, email.port, timeout=email.timeout) as smtp:
        smtp.ehlo()
        if email.starttls:
            context = ssl.create_default_context(
                cafile=str(email.ca) if email.ca is not None else None)
            smtp.starttls(context=context)
            smtp.ehlo()
        if email.user:
            smtp.login(email.user, password or "")
        smtp.send_message(message(email, subject, body))
