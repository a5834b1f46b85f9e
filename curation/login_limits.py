"""Login limits: failed console logins counted per client, per account, and per both.

Three counters of *failed* attempts, each a list of windows (the ``limits``
package, which Flask-Limiter is built on; in memory, or in Redis when
``REDIS_URL`` is set, so that every gunicorn worker counts together):

- per client (its address), over all accounts: ``LOGIN_LIMITS_PER_CLIENT``;
- per account and client: ``LOGIN_LIMITS_PER_ACCOUNT_CLIENT``, several windows
  of growing length, so that a client that keeps guessing one account waits
  longer and longer (the backoff);
- per account, over all clients: ``LOGIN_LIMITS_PER_ACCOUNT``, one short window
  set above what one client may try in it.

While any counter is full the login form answers 429 with ``Retry-After``,
before the password is checked (the right password too: otherwise the answer
would tell a guesser when it is right). What an anonymous client can do to
someone else's account is therefore bounded: alone it never fills the
account's counter; with others it holds the account closed only while they
keep trying, and for at most one short window after. There is no stored
lock-out (OWASP Authentication Cheat Sheet, "Account Lockout": an attacker
must not be able to lock users out at will). A successful login clears the
counter of that account and client.

Accounts are keyed by a hash of the lower-cased e-mail, so the storage (Redis)
never holds addresses. If the storage cannot be reached, logins go on unlimited
and each refusal to count is logged: the password check still applies.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from config import Settings, reveal

log = logging.getLogger("parley.users")

#: Prefix of every key the limits keep in Redis.
KEY_PREFIX = "parley-login"


@dataclass(frozen=True)
class Refusal:
    """A login attempt refused before its password was checked.

    Attributes:
        retry_after: Whole seconds until the fullest counter has room again.
        scope: ``client``, ``account_client`` or ``account``: which counter is full.
    """

    retry_after: int
    scope: str


def account_key(email: str) -> str:
    """The key of an account in the counters: a hash of the lower-cased e-mail."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def client_address(remote_addr: str | None, forwarded_for: str | None, proxy_hops: int) -> str:
    """The client's address, as the last of `proxy_hops` trusted proxies saw it.

    Each proxy appends the address it received from to ``X-Forwarded-For``; only
    the last `proxy_hops` entries were written by proxies we trust (Werkzeug's
    ``ProxyFix`` reads it the same way), the rest by the client.

    Args:
        remote_addr: The connection's address (the nearest proxy, behind one).
        forwarded_for: The ``X-Forwarded-For`` header, if any.
        proxy_hops: ``TRUSTED_PROXY_HOPS``: 0 when clients connect directly.

    Returns:
        The address to count the client by.
    """
    if proxy_hops > 0 and forwarded_for:
        entries = [entry.strip() for entry in forwarded_for.split(",")]
        if len(entries) >= proxy_hops and entries[-proxy_hops]:
            return entries[-proxy_hops]
    return remote_addr or "unknown"


class LoginLimits:
    """The three counters of failed logins.

    Args:
        storage_uri: ``memory://`` or a Redis URL (the ``limits`` package's storage URIs).
        per_client: Windows for one client over all accounts, e.g. ``10 per minute``.
        per_account_client: Windows for one client on one account (growing: the backoff).
        per_account: Windows for one account over all clients.
        proxy_hops: Trusted proxies in front of the app (see `client_address`).
        key_prefix: Prefix of the keys in Redis.

    Raises:
        ValueError: a limit is not in the ``limits`` notation (``N per minute; M per hour``).
    """

    def __init__(
        self,
        storage_uri: str,
        per_client: str,
        per_account_client: str,
        per_account: str,
        proxy_hops: int = 0,
        key_prefix: str = KEY_PREFIX,
    ) -> None:
        self.proxy_hops = proxy_hops
        options: dict[str, Any] = {}
        if storage_uri.startswith(("redis://", "rediss://", "unix://")):
            # A login must not hang on a Redis outage (then it goes on unlimited).
            options.update(key_prefix=key_prefix, socket_connect_timeout=2, socket_timeout=2)
        self.storage = storage_from_string(storage_uri, **options)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.tiers: dict[str, list[RateLimitItem]] = {
            "client": parse_many(per_client),
            "account_client": parse_many(per_account_client),
            "account": parse_many(per_account),
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginLimits:
        """The limits the settings describe (Redis at ``REDIS_URL``, else in memory).

        The ``LOGIN_LIMITS_*`` windows were checked when the settings were parsed.
        """
        return cls(
            reveal(settings.redis_url) or "memory://",
            settings.login_limits_per_client,
            settings.login_limits_per_account_client,
            settings.login_limits_per_account,
            proxy_hops=settings.trusted_proxy_hops,
        )

    def _counters(self, client: str, email: str) -> list[tuple[str, RateLimitItem, tuple]]:
        account = account_key(email)
        identifiers = {
            "client": ("client", client),
            "account_client": ("account_client", account, client),
            "account": ("account", account),
        }
        return [
            (scope, item, identifiers[scope])
            for scope, items in self.tiers.items()
            for item in items
        ]

    def check(self, client: str, email: str) -> Refusal | None:
        """Whether `client` may try to log in to `email` now.

        Returns:
            None to go on; a `Refusal` with the longest wait among the full counters.
        """
        refusal: Refusal | None = None
        try:
            for scope, item, identifiers in self._counters(client, email):
                if self.limiter.test(item, *identifiers):
                    continue
                reset = self.limiter.get_window_stats(item, *identifiers).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                if refusal is None or wait > refusal.retry_after:
                    refusal = Refusal(wait, scope)
        except Exception as error:  # the storage (Redis) is unreachable: fail open, loudly
            log.error("admin.login.limits_unavailable error=%s", type(error).__name__)
            return None
        return refusal

    def failed(self, client: str, email: str) -> None:
        """Count a failed attempt of `client` on `email` in every counter."""
        try:
            for _, item, identifiers in self._counters(client, email):
                self.limiter.hit(item, *identifiers)
        except Exception as error:
            log.error("admin.login.limits_unavailable error=%s", type(error).__name__)

    def succeeded(self, client: str, email: str) -> None:
        """Clear the counter of `client` on `email` (the person got their password right)."""
        try:
            for scope, item, identifiers in self._counters(client, email):
                if scope == "account_client":
                    self.limiter.clear(item, *identifiers)
        except Exception as error:
            log.error("admin.login.limits_unavailable error=%s", type(error).__name__)
