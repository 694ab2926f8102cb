"""Bearer-token authentication: a token names a user and the user's groups.

Configured by environment (never on the command line, where `ps` would show it):

    STEPFLOW_HTTP_TOKENS='s3cret-1=alice:ops,admin; s3cret-2=bob:viewers; s3cret-3=ci'
    STEPFLOW_HTTP_TOKENS_FILE=/run/secrets/stepflow-tokens     # same syntax, one entry a line
    STEPFLOW_HTTP_ADMIN_GROUP=admin                            # default "admin"

An entry is `TOKEN=USER[:GROUP,GROUP...]`; entries are separated by `;` or new lines; blank
entries and lines starting with `#` are ignored. A token is at least 16 characters. Only a
SHA-256 digest of each token is kept in memory. Members of the admin group pass every
per-definition right (see `stepflow.adapters.http.rights`).

With no token configured, authentication is off and every request acts as `anonymous`, an
admin: allowed only when the server is bound to a loopback address (`check_binding`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Mapping

import msgspec

MIN_TOKEN_LENGTH = 16
ANONYMOUS = "anonymous"


class AuthConfigError(ValueError):
    """A token list that cannot be used; the message never contains a token."""


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    user: str
    groups: tuple[str, ...] = ()
    admin: bool = False


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str, admin_group: str = "admin", source: str = "STEPFLOW_HTTP_TOKENS") -> dict[bytes, Principal]:
    """`TOKEN=USER[:G1,G2]` entries -> {sha256(token): Principal}."""
    out: dict[bytes, Principal] = {}
    entries = [e.strip() for line in text.splitlines() for e in line.split(";")]
    for n, entry in enumerate((e for e in entries if e and not e.startswith("#")), start=1):
        token, sep, who = entry.partition("=")
        user, _, groups_text = who.partition(":")
        token, user = token.strip(), user.strip()
        if not sep or not token or not user:
            raise AuthConfigError(f"{source}: entry {n} is not TOKEN=USER[:GROUP,...]")
        if len(token) < MIN_TOKEN_LENGTH:
            raise AuthConfigError(f"{source}: entry {n} (user {user!r}) has a token shorter than "
                                  f"{MIN_TOKEN_LENGTH} characters")
        groups = tuple(g.strip() for g in groups_text.split(",") if g.strip())
        if _digest(token) in out:
            raise AuthConfigError(f"{source}: entry {n} (user {user!r}) repeats a token")
        out[_digest(token)] = Principal(user=user, groups=groups, admin=admin_group in groups)
    return out


class TokenAuth:
    def __init__(self, tokens: Mapping[bytes, Principal] | None = None) -> None:
        self._tokens = dict(tokens or {})

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TokenAuth:
        env = os.environ if environ is None else environ
        admin_group = env.get("STEPFLOW_HTTP_ADMIN_GROUP", "admin")
        tokens = parse_tokens(env.get("STEPFLOW_HTTP_TOKENS", ""), admin_group)
        path = env.get("STEPFLOW_HTTP_TOKENS_FILE")
        if path:
            try:
                with open(path, encoding="utf-8") as file:
                    text = file.read()
            except OSError as error:
                raise AuthConfigError(f"STEPFLOW_HTTP_TOKENS_FILE: cannot read {path}: {error.strerror}") from None
            more = parse_tokens(text, admin_group, "STEPFLOW_HTTP_TOKENS_FILE")
            if set(more) & set(tokens):
                raise AuthConfigError("STEPFLOW_HTTP_TOKENS_FILE repeats a token of STEPFLOW_HTTP_TOKENS")
            tokens.update(more)
        return cls(tokens)

    @classmethod
    def with_tokens(cls, tokens: Mapping[str, tuple[str, tuple[str, ...]]], admin_group: str = "admin") -> TokenAuth:
        """For embedding and tests: {token: (user, groups)}."""
        return cls({_digest(t): Principal(user=u, groups=g, admin=admin_group in g) for t, (u, g) in tokens.items()})

    def authenticate(self, authorization: str | None, *, raw_token: bool = False) -> Principal | None:
        """The principal of an `Authorization` header; None if missing or unknown.

        `raw_token` also takes the bare token as the whole header (`Authorization: TOKEN`), the
        way the original Step Flow's worker SDK sends it (`stepflow.adapters.http.step_flow_api`).
        """
        if not self.enabled:
            return Principal(user=ANONYMOUS, admin=True)
        if not authorization:
            return None
        if raw_token and (principal := self._tokens.get(_digest(authorization.strip()))) is not None:
            return principal
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self._tokens.get(_digest(token.strip()))

    def session(self, user: str, token: str) -> Principal | None:
        """The principal a sign-in names: `token` is configured and is `user`'s; None otherwise.
        With authentication off every sign-in is `anonymous`, as every request is then."""
        if not self.enabled:
            return Principal(user=ANONYMOUS, admin=True)
        principal = self._tokens.get(_digest(token.strip())) if token.strip() else None
        return principal if principal is not None and principal.user == user.strip() else None


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, auth: TokenAuth) -> None:
    """Refuse to serve beyond this machine without tokens."""
    if not auth.enabled and not is_loopback(host):
        raise AuthConfigError(
            f"refusing to serve on {host} without authentication: set STEPFLOW_HTTP_TOKENS "
            "(or STEPFLOW_HTTP_TOKENS_FILE), or bind to 127.0.0.1")
