"""The one family of errors users see.

Every error a user can cause or fix is a `DockshipError`; the CLI catches it
once and maps it to the fixed exit codes (design §2). Anything else escaping
is a bug and keeps its traceback.
"""

from __future__ import annotations


def last_line(exc: BaseException, limit: int = 200) -> str:
    """The last line of an exception's text (libraries put the reason last), bounded for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[-1][:limit] if text else type(exc).__name__


def printable(text: str) -> str:
    """`text` with control characters escaped (`\\x1b`, `\\r`, C1 such as CSI `\\x9b`,
    bidi overrides such as `\\u202e`, any other non-printable code point): what servers
    and users send is shown, never interpreted by the terminal. Multi-line messages keep
    their line breaks; every other control character is escaped. `redact.safe` adds
    secret scrubbing and URL redaction on top, for anything printed."""
    return "".join(ch if ch == "\n" or ch.isprintable() else ch.encode("unicode_escape").decode()
                   for ch in text)


class DockshipError(Exception):
    """An error meant for the user: one line that says what and how to fix it."""

    exit_code = 1


class UsageError(DockshipError):
    """Bad input, usage or configuration: nothing was touched."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration key is wrong; the message starts with the key's path."""

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("; ".join(self.problems) if len(self.problems) == 1
                         else f"{len(self.problems)} configuration errors:\n  " + "\n  ".join(self.problems))


class Unreachable(DockshipError):
    """A server we depend on (index, registry, engine, Chef) did not answer."""

    exit_code = 1


class DeployFailed(DockshipError):
    """The deployment failed; what was changed has been put back (or the message says what was not)."""

    exit_code = 1


class LockHeld(DockshipError):
    """Another deployment holds the lock."""

    exit_code = 3
