"""How a command fails: one line on stderr, `stepflow: ...`, and the documented exit code.

Each command used to word and map its own failures, so the same unreachable store was a
clean exit 4 from `workflows` and a traceback from `run`, prefixes were `error:` here and
`stepflow:` there, and a closed pipe (`stepflow audit | head -1`) was reported as "store
unreachable" (a `BrokenPipeError` is a `ConnectionError`). Now a command raises, and `main`
turns what it recognises into a line and a code here; anything else is a bug in stepflow
and keeps its traceback, which is what a bug report needs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from stepflow.adapters.persistence import StoreUnavailable, StoreURLError, store_failure
from stepflow.engine.definitions import DefinitionError
from stepflow.settings import SettingsError, redact_text, redact_url

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C

PREFIX = "stepflow: "


class UsageError(Exception):
    """Bad input from the user: exit 2 with the message."""


class Unavailable(Exception):
    """Infrastructure that is not there (a broker, an HTTP port): exit 4 with the message."""


def say(message: str) -> None:
    """One line on stderr with the prefix every stepflow error carries."""
    print(PREFIX + " ".join(message.split("\n")), file=sys.stderr)


def failure(error: BaseException, store: str | None = None) -> tuple[int, str] | None:
    """The exit code and message for an error a command may meet, or None for a bug."""
    if isinstance(error, UsageError | SettingsError | StoreURLError | DefinitionError):
        return EXIT_USAGE, str(error)
    if isinstance(error, Unavailable | StoreUnavailable):
        return EXIT_UNREACHABLE, str(error)
    if store is not None and not isinstance(error, BrokenPipeError):
        message = store_failure(error, store)
        if message is not None:
            return EXIT_UNREACHABLE, message
    return None


def report(error: BaseException, store: str | None = None) -> int | None:
    """Say what `failure` makes of `error` and return its exit code; None: not ours to say."""
    known = failure(error, store)
    if known is None:
        return None
    say(known[1])
    return known[0]


def drop_stdout() -> None:
    """After a closed pipe: send what is left of stdout to /dev/null, so the interpreter's
    last flush cannot fail again and print "Exception ignored ... BrokenPipeError"."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@contextlib.contextmanager
def quiet_broker_logs() -> Iterator[None]:
    """While connecting: aiormq logs every failed attempt on its own (a bare line through
    Python's last-resort handler) before the command can say, in one line, what failed."""
    loggers = [logging.getLogger(name) for name in ("aiormq", "aio_pika")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


async def probe_broker(url: str) -> None:
    """Raise `Unavailable` at once, in one line, when RabbitMQ at `url` cannot be reached:
    the robust connections the backend and workers use would retry, or fail with a trace."""
    import aiormq

    from stepflow.adapters.amqp.connection import connect_once

    try:
        with quiet_broker_logs():
            connection = await connect_once(url, "stepflow-probe", timeout=10)
        await connection.close()
    except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as error:
        raise Unavailable(f"cannot reach RabbitMQ at {redact_url(url)}: "
                          f"{redact_text(str(error) or type(error).__name__, url)}") from None
