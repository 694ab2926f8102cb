"""Settings as command-line flags: each command adds the ones it takes, from `SPECS`.

The flags' names, help and meaning come from `stepflow.settings`, so a flag and its
`STEPFLOW_*` variable cannot drift apart. Parsed flags stay strings (or lists) and are
typed by `load_settings`, with the variables, in one pass: a bad value is reported the same
way whether it came from a flag or the environment. A parser records which of its options
are settings, so a command's own option of the same name (`audit --actor`, `project
--batch-size`) is never mistaken for one.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from stepflow.adapters.logging import configure
from stepflow.adapters.persistence import StoreURLError, check_store_url
from stepflow.settings import SPEC, Settings, SettingsError, named, redact_url, resolve

_SHOWN_DEFAULTS = Settings().redacted()
_REGISTERED = "settings_flags"  # parser default: the dests that are settings

_CHOICES: dict[str, tuple[str, ...]] = {"log_format": ("console", "json")}
# A flag that turns a setting off says so (the setting's own help says what it is on).
_HELPS = {"projections": "do not keep the read models in this process: run `stepflow project` elsewhere "
                         "($STEPFLOW_PROJECTIONS=0)"}
# Defaults that depend on the machine are described, not shown: help (and docs/cli.md) stay the same.
_DEFAULT_TEXT = {"store": "; default: stepflow.sqlite in the data directory, $STEPFLOW_HOME "
                          "(`stepflow config` shows where)"}
_METAVARS = {"http": "HOST:PORT", "definitions": "PATH", "outbox_poll": "S", "timeout_check": "S",
             "store": "URL", "amqp_url": "URL", "log_level": "LEVEL", "actor": "NAME", "prefix": "PREFIX",
             "batch_size": "N", "prefetch": "N", "max_body": "BYTES", "http_tokens_file": "PATH"}


def add_settings(parser: argparse.ArgumentParser, *names: str,
                 helps: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """Add the flags of these settings (names of `Settings` fields) to `parser`.

    `helps` words a flag's whole help for one command (`run --amqp-url` also switches the broker).
    """
    for name in names:
        spec = SPEC[name]
        if spec.flag is None:
            raise ValueError(f"setting {name!r} has no flag (environment only: {spec.env})")
        default = getattr(_SHOWN_DEFAULTS, name)
        shown = _DEFAULT_TEXT.get(name, f"; default {default!r}" if default not in (None, "", ()) else "")
        help = (helps or {}).get(name, _HELPS.get(name, f"{spec.help} (${spec.env}{shown})")).replace("%", "%%")
        options: dict[str, Any] = {"dest": name, "default": None, "help": help}
        if name == "projections":
            options.update(action="store_const", const=False)
        elif spec.separator is not None:
            options.update(action="append", metavar=_METAVARS.get(name))
        else:
            options.update(choices=_CHOICES.get(name), metavar=_METAVARS.get(name))
        parser.add_argument(spec.flag, **options)
    parser.set_defaults(**{_REGISTERED: (*(parser.get_default(_REGISTERED) or ()), *names)})
    return parser


def flags_of(args: argparse.Namespace) -> dict[str, Any]:
    """The settings flags of a parsed command line, by setting name (None: not given)."""
    return {name: getattr(args, name, None) for name in getattr(args, _REGISTERED, ())}


def settings_of(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of a parsed command line: its settings flags, then `STEPFLOW_*`, then defaults.

    `SettingsError` for a bad value, and for a store URL no store could have (`mysql://`, a
    bare file name): every command refuses it with exit 2 before opening anything.
    """
    settings, sources = resolve(flags_of(args), environ)
    try:
        check_store_url(settings.store)
    except StoreURLError as error:
        raise SettingsError(f"{named('store', sources['store'])}={redact_url(settings.store)!r}: {error}") from None
    return settings


def service_logging(settings: Settings) -> None:
    """A long-running command logs at info unless told otherwise (the CLI's default is warning)."""
    configure(settings.log_format, settings.log_level or "info")
