"""Every setting of a stepflow process, typed, and read from flags and `STEPFLOW_*` in one place.

Each setting used to be read by the module that needed it, with its own default and its own
parsing, so `serve`, `serve --embedded` and `run` could disagree about the same variable and
nobody could list them. Now a command builds one `Settings` (a flag wins over the environment,
the environment over the default; an empty variable counts as unset) and hands it to
`stepflow.bootstrap`; `stepflow config` prints what a command would get. `SPECS` is the one
table of names: each setting's variable is `STEPFLOW_` + its name in capitals, its flag (if
any) is listed there, and so is its help text.

Local data has one place, `home` (`data_dir`): `$STEPFLOW_HOME`, else `$XDG_DATA_HOME/stepflow`,
else `~/.local/share/stepflow`; the default store is `stepflow.sqlite` there, so a command run
from another directory finds the same workflows instead of a new, empty store beside it.
URLs are checked too (the broker's here, the store's by the CLI with the persistence module's
grammar), so a mistyped URL is exit 2 for every command, before anything tries to connect.
`amqp_url` may name several brokers, a RabbitMQ cluster's nodes: URLs separated by commas or
whitespace (`amqp_urls` splits them; a comma separates only before the next URL's `amqp://`,
so a comma in a password stays in its URL); each is checked and each password masked.

`amqp_server_configuration` is named after the mcai worker SDK's `AMQP_SERVER_CONFIGURATION`
and takes its values (`standalone`, `cluster`: quorum queues), and that variable is read too
when `STEPFLOW_AMQP_SERVER_CONFIGURATION` is unset: both sides declare the same queues, and
if they disagree on the queue type RabbitMQ refuses the second declaration (the SDK then
hangs), so one variable set for a whole deployment is the safest way to keep them alike.
Unlike the SDK, which takes anything but `cluster` (`quorum` included) for standalone, a
value that is neither is refused, so a typo does not silently give classic queues. It has
no flag: the broker's shape is the deployment's, the same for every process.

Secrets (a password in a URL, the HTTP tokens) have no flag, so they never show in `ps`, and
never leave this module in clear when printed: `repr()` and `redacted()` mask them.
`STEPFLOW_FAULT*` are not settings: they are the tests' crash points (`stepflow.adapters.faults`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlparse

import msgspec

from stepflow.adapters.amqp.connection import DEFAULT_URL as DEFAULT_AMQP_URL
from stepflow.adapters.amqp.connection import NEXT_URL, URL_SEPARATORS, mask_one_url
from stepflow.adapters.amqp.connection import urls as node_urls
from stepflow.adapters.protocol import MAX_BODY_BYTES

STORE_FILE = "stepflow.sqlite"  # in the data directory: the default store
ENV_PREFIX = "STEPFLOW_"
MASK = "***"

Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where stepflow keeps local data: `$STEPFLOW_HOME`, else `$XDG_DATA_HOME/stepflow`, else
    `~/.local/share/stepflow` (the XDG base directory default), as an absolute path."""
    env = os.environ if environ is None else environ
    if env.get("STEPFLOW_HOME"):
        return Path(env["STEPFLOW_HOME"]).expanduser().absolute()
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the spec: a relative value is ignored
        return Path(xdg) / "stepflow"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "share" / "stepflow"


def default_store(home: str | Path | None = None) -> str:
    """The store when none is named: `stepflow.sqlite` in `home` (default: `data_dir()`)."""
    return f"sqlite:///{Path(home) if home is not None else data_dir()}/{STORE_FILE}"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """What one stepflow process runs with. Read it with `load_settings()`.

    Built directly, `home` and `store` default to those of the process's environment.
    """

    home: str = msgspec.field(default_factory=lambda: str(data_dir()))
    store: str = msgspec.field(default_factory=default_store)
    amqp_url: str = DEFAULT_AMQP_URL
    amqp_server_configuration: Literal["standalone", "cluster"] = "standalone"
    prefix: str = ""
    log_format: Literal["console", "json"] = "console"
    log_level: str | None = None  # None: info for serve and worker; one-shot commands: warning, flag only
    batch_size: Positive = 256
    prefetch: Positive = 512
    outbox_poll: Seconds = 0.5
    timeout_check: Seconds = 1.0
    max_body: Positive = MAX_BODY_BYTES
    projections: bool = True
    http: str | None = None
    definitions: tuple[str, ...] = ()
    http_tokens: str = ""
    http_tokens_file: str | None = None
    http_admin_group: str = "admin"
    http_public_metrics: bool = False
    ready_max_lag: Annotated[int, msgspec.Meta(ge=0)] = 10000
    notification_hosts: tuple[str, ...] = ()
    actor: str | None = None

    @property
    def quorum_queues(self) -> bool:
        """Cluster mode: every durable queue a quorum queue (`Topology.quorum`)."""
        return self.amqp_server_configuration == "cluster"

    def redacted(self) -> Settings:
        """A copy fit to print or log: URL passwords and tokens masked."""
        masked = {spec.name: _mask(spec, getattr(self, spec.name)) for spec in SPECS if spec.secret}
        return msgspec.structs.replace(self, **masked)

    def __repr__(self) -> str:
        shown = self.redacted()
        fields = ", ".join(f"{f}={getattr(shown, f)!r}" for f in self.__struct_fields__)
        return f"Settings({fields})"

    __str__ = __repr__


@dataclass(frozen=True)
class Spec:
    """Where a setting comes from besides its default, and what it means."""

    name: str
    help: str
    flag: str | None = None  # None: environment only
    separator: str | None = None  # a list setting: how its variable separates the items
    secret: Literal["password", "whole"] | None = None  # masked: a URL's password, or all of it
    fallback: str | None = None  # another program's variable, read when ours is unset

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def variables(self) -> tuple[str, ...]:
        """The variables it is read from, first one first."""
        return (self.env, self.fallback) if self.fallback else (self.env,)


SPECS: tuple[Spec, ...] = (
    Spec("home", "directory of local data: the default store is stepflow.sqlite in it "
         "(unset: $XDG_DATA_HOME/stepflow, else ~/.local/share/stepflow)"),
    Spec("store", "event store URL: sqlite:///file.sqlite, postgresql://user@host/db?schema=s, memory://",
         "--store", secret="password"),
    Spec("amqp_url", "RabbitMQ URL (the path names the vhost); a cluster's nodes: several, separated by "
         "commas or spaces", "--amqp-url", secret="password"),
    Spec("amqp_server_configuration", "standalone, or cluster: quorum queues, as mcai workers with "
         "AMQP_SERVER_CONFIGURATION=cluster (read when the STEPFLOW_ variable is unset)",
         fallback="AMQP_SERVER_CONFIGURATION"),
    Spec("prefix", "prefix of every exchange and queue name, so installations can share a broker",
         "--prefix"),
    Spec("log_format", "console (for people) or json (one object a line)", "--log-format"),
    Spec("log_level", "debug, info, warning, error (default: info for serve and worker; warning for the "
         "other commands, which take the flag only)", "--log-level"),
    Spec("batch_size", "most inbound messages per transaction", "--batch-size"),
    Spec("prefetch", "unacked inbound messages the backend holds at once", "--prefetch"),
    Spec("outbox_poll", "seconds between looks at the event log for orders stored by other processes",
         "--outbox-poll"),
    Spec("timeout_check", "seconds between checks for jobs past their timeout_s", "--timeout-check"),
    Spec("max_body", "inbound bodies over this many bytes are quarantined undecoded", "--max-body"),
    Spec("projections", "keep the read models in this process (off: run `stepflow project` elsewhere)",
         "--no-projections"),
    Spec("http", "also serve the HTTP API and web view at HOST:PORT (PORT 0: any free port)", "--http"),
    Spec("definitions", "definition files or directories the HTTP API may start (the flag repeats; "
         "the variable's and the flags' add up)", "--definitions", separator=os.pathsep),
    Spec("http_tokens", "bearer tokens: TOKEN=USER:GROUP,GROUP; ...", secret="whole"),
    Spec("http_tokens_file", "a file of tokens, one TOKEN=USER:GROUPS a line", "--http-tokens-file"),
    Spec("http_admin_group", "members of this group pass every right"),
    Spec("http_public_metrics", "serve /metrics without a token (1/0)"),
    Spec("ready_max_lag", "/readyz fails when a view is more than this many events behind the log"),
    Spec("notification_hosts", "the only hosts notification steps and hooks may call (comma-separated)",
         separator=","),
    Spec("actor", "who issues commands (default: the OS user)", "--actor"),
)
SPEC = {spec.name: spec for spec in SPECS}

Source = Literal["flag", "environment", "default"]


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the flag or variable."""


def load_settings(flags: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from `flags` ({name: value}, None meaning "not given") and the environment."""
    return resolve(flags, environ)[0]


def resolve(flags: Mapping[str, Any] | None = None,
            environ: Mapping[str, str] | None = None) -> tuple[Settings, dict[str, Source]]:
    """`load_settings`, and where each setting came from (for `stepflow config`)."""
    env = os.environ if environ is None else environ
    flags = flags or {}
    raw: dict[str, Any] = {}
    sources: dict[str, Source] = {spec.name: "default" for spec in SPECS}
    origin: dict[str, str] = {}
    for spec in SPECS:
        variable, text = _variable(spec, env)
        if text != "":
            raw[spec.name], sources[spec.name], origin[spec.name] = _from_env(spec, text), "environment", variable
        given = flags.get(spec.name)
        if given is None or given == []:
            continue
        if spec.name == "definitions":  # both add up: files named by the deployment and by the command
            given = [*raw.get("definitions", ()), *given]
        raw[spec.name], sources[spec.name], origin[spec.name] = given, "flag", spec.flag or spec.name
    raw["home"] = str(data_dir(env))
    raw.setdefault("store", default_store(raw["home"]))
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as error:
        problem, _, path = str(error).rpartition(" - at `$.")
        name = re.split(r"[`.\[]", path)[0]
        given = "" if name in SPEC and SPEC[name].secret else f"={raw.get(name)!r}"
        raise SettingsError(f"{origin.get(name, name)}{given}: {problem or error}{_one_of(name)}") from None
    for name, problem in _url_problems(settings):
        raise SettingsError(f"{origin.get(name, name)}={redact_url(getattr(settings, name))!r}: {problem}")
    return settings, sources


def amqp_urls(value: str) -> tuple[str, ...]:
    """The broker URLs in an `amqp_url` setting: one, or a cluster's nodes, in the given order."""
    return tuple(node_urls(value)) if value.strip(URL_SEPARATORS) else ()


def _url_problems(settings: Settings) -> list[tuple[str, str]]:
    """The URL settings no server could ever accept, with why: found before any connection.
    (A store URL's grammar is `stepflow.adapters.persistence`'s, which reads these settings:
    the CLI checks it, `stepflow.adapters.cli.options.settings_of`.)"""
    urls = amqp_urls(settings.amqp_url) or ("",)
    for number, url in enumerate(urls, 1):
        problem = _amqp_url_problem(url)
        if problem:
            where = f"URL {number} of {len(urls)} {redact_url(url)!r}: " if len(urls) > 1 else ""
            return [("amqp_url", where + problem)]
    return []


def _amqp_url_problem(url: str) -> str | None:
    broker = urlparse(url)
    if broker.scheme not in ("amqp", "amqps") or not broker.hostname or re.search(r"[\s,]", broker.hostname):
        return ("not a RabbitMQ URL (use amqp://USER:PASSWORD@HOST:PORT/VHOST; several: each with its "
                "amqp://, separated by commas or spaces)")
    try:
        broker.port  # noqa: B018  raises for a port that is not a number
    except ValueError:
        return "not a port number"
    return None


def quorum_queues(environ: Mapping[str, str] | None = None) -> bool:
    """Cluster mode as the environment sets it: what a broker built without the settings (a
    library's `AmqpRuntime`, a worker run by its own program) uses, as `stepflow serve` would.
    `SettingsError` for a value that is neither standalone nor cluster."""
    variable, text = _variable(SPEC["amqp_server_configuration"], os.environ if environ is None else environ)
    if text and text not in _CHOICES["amqp_server_configuration"]:
        raise SettingsError(f"{variable}={text!r}: Invalid enum value {text!r}{_one_of('amqp_server_configuration')}")
    return text == "cluster"


def _variable(spec: Spec, env: Mapping[str, str]) -> tuple[str, str]:
    """(variable, text) of the first of the spec's variables set and not empty, else ("", "")."""
    return next(((name, env[name]) for name in spec.variables if env.get(name, "") != ""), ("", ""))


def _one_of(name: str) -> str:
    return f" (one of: {', '.join(_CHOICES[name])})" if name in _CHOICES else ""


def named(name: str, source: Source) -> str:
    """How a message names a setting: its flag or variable, whichever gave its value."""
    spec = SPEC[name]
    if source == "flag":
        return spec.flag or name
    return spec.env if source == "environment" else name


def _from_env(spec: Spec, text: str) -> Any:
    if spec.separator is not None:
        items = [item.strip() for item in text.split(spec.separator)]
        if spec.name == "notification_hosts":
            items = [item.lower() for item in items]
        return [item for item in items if item]
    if spec.name in _BOOLEANS:
        return _boolean(spec.env, text)
    return text


_BOOLEANS = {f.name for f in msgspec.structs.fields(Settings) if f.type is bool}
_CHOICES = {f.name: get_args(f.type) for f in msgspec.structs.fields(Settings) if get_origin(f.type) is Literal}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _boolean(env: str, text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise SettingsError(f"{env}: expected one of {', '.join(_TRUE + _FALSE)}, got {text!r}")


def _mask(spec: Spec, value: str) -> str:
    if spec.secret == "password":
        return redact_url(value)
    return MASK if value else ""


def redact_url(url: str) -> str:
    """The URL with its password (if any) masked: any URL, store or broker, one rule; each of
    several broker URLs in one value masked alike, the separators kept."""
    parts = re.split(f"({NEXT_URL.pattern})", url, flags=re.IGNORECASE)
    return "".join(part if index % 2 else mask_one_url(part) for index, part in enumerate(parts))


def redact_text(text: str, *urls: str) -> str:
    """An error's text with these URLs' passwords masked, wherever a driver quoted them (each
    of several broker URLs too; longest first, so no password is left half masked)."""
    pieces = {one for value in urls for one in (value, *amqp_urls(value)) if urlparse(one).password}
    for url in sorted(pieces, key=len, reverse=True):
        text = text.replace(url, redact_url(url))
    for password in sorted({urlparse(url).password or "" for url in pieces}, key=len, reverse=True):
        text = text.replace(password, MASK)
    return text
