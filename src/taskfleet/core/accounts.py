"""Accounts, secrets and sessions.

Secrets are kept as argon2id hashes. Session tokens and API keys never touch the database
in the clear: a session is stored as the SHA-256 of its token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import argon2

from taskfleet.core import errors
from taskfleet.core.models import Account, Agent, JSONValue, Principal, RegistrationPolicy, Role
from taskfleet.core.ports import Clock, Store

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SESSION_TTL_SECONDS = 7 * 24 * 3600
MAX_SECRET_LENGTH = 1024
POLICY_KEY = "registration_policy"
#: Remembered successful agent logins, so per-request Basic auth costs one hash lookup
#: instead of one argon2 verification (which is slow on purpose).
VERIFIED_CACHE_SIZE = 50_000
#: How long a remembered login is trusted before its account is looked at again (one
#: indexed read, no argon2 unless the secret's hash changed). It bounds how long a
#: credential keeps working here once it is revoked elsewhere: its account removed by
#: the CLI (another process) or through another replica, or its secret changed.
VERIFIED_RECHECK_SECONDS = 5.0


@dataclass(slots=True)
class _Verified:
    principal: Principal
    secret_hash: str  #: the hash the secret was verified against
    checked: float  #: clock time of the last look at the account


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise errors.Invalid(
            f"invalid name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_secret(secret: str) -> str:
    if not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET_LENGTH:
        raise errors.Invalid(f"a secret must be 1-{MAX_SECRET_LENGTH} characters")
    return secret


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccountService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        api_keys: Sequence[str] = (),
        hasher: argon2.PasswordHasher | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._api_keys = tuple(k for k in api_keys if k)
        self._hasher = hasher or argon2.PasswordHasher()
        self._verified: dict[str, _Verified] = {}

    def hash_secret(self, secret: str) -> str:
        return self._hasher.hash(check_secret(secret))

    async def add(self, name: str, role: Role, secret: str) -> Account:
        """Creates an account (and, for an agent account, its agent record).

        Raises `Invalid` for a bad name or secret and `Conflict` when the name is taken.
        """
        account = await self._store.add_account(
            check_name(name), Role(role), self.hash_secret(secret), self._clock.now()
        )
        if account.role is Role.AGENT and await self._store.get_agent(name) is None:
            await self._store.add_agent(name, account.id, self._clock.now())
        return account

    async def ensure_admin(self, name: str = "admin") -> str | None:
        """On a fresh database, creates the first admin with a random password and returns
        that password (shown once); returns None when any admin already exists."""
        if any(a.role is Role.ADMIN for a in await self._store.list_accounts()):
            return None
        password = secrets.token_urlsafe(18)
        await self.add(name, Role.ADMIN, password)
        return password

    async def remove(self, name: str) -> None:
        """Removes the account with its sessions and agent record. Raises `NotFound`."""
        await self._store.remove_account(name)
        self._verified.clear()

    async def all(self) -> list[Account]:
        return await self._store.list_accounts()

    async def authenticate(self, name: str, secret: str) -> Principal:
        """Checks a name and secret. Raises `Unauthorized` with one message for every failure,
        so callers cannot probe which names exist. A login verified here is remembered; a
        credential revoked elsewhere stops working within `VERIFIED_RECHECK_SECONDS`."""
        cache_key = token_digest(f"{name}\0{secret}")
        cached = self._verified.get(cache_key)
        now = self._clock.now()
        if cached is not None and 0 <= now - cached.checked < VERIFIED_RECHECK_SECONDS:
            return cached.principal
        self._verified.pop(cache_key, None)
        found = await self._store.account_with_hash(name) if isinstance(name, str) else None
        if found is None or not found[0].enabled:
            raise errors.Unauthorized("invalid credentials")
        account, secret_hash = found
        known = cached is not None and cached.secret_hash == secret_hash
        if not known and not self._verify(secret_hash, secret):
            raise errors.Unauthorized("invalid credentials")
        principal = Principal(name=account.name, role=account.role, account_id=account.id)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[cache_key] = _Verified(principal, secret_hash, now)
        return principal

    def _verify(self, secret_hash: str, secret: str) -> bool:
        try:
            return self._hasher.verify(secret_hash, secret)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    async def login(self, name: str, secret: str, role: Role | None = None) -> str:
        """Returns a new session token for the account. Raises `Unauthorized`."""
        principal = await self.authenticate(name, secret)
        if role is not None and principal.role is not role:
            raise errors.Unauthorized("invalid credentials")
        assert principal.account_id is not None
        token = secrets.token_hex(32)
        expires = self._clock.now() + SESSION_TTL_SECONDS
        await self._store.add_session(token_digest(token), principal.account_id, expires)
        return token

    async def logout(self, token: str) -> None:
        if not await self._store.remove_session(token_digest(token)):
            raise errors.Unauthorized("unknown or expired session")

    async def resolve_token(self, token: str) -> Principal:
        """The caller behind a session token or a configured API key."""
        for key in self._api_keys:
            if hmac.compare_digest(key.encode(), token.encode()):
                return Principal(name="api-key", role=Role.ADMIN)
        account = await self._store.session_account(token_digest(token), self._clock.now())
        if account is None or not account.enabled:
            raise errors.Unauthorized("unknown or expired session")
        return Principal(name=account.name, role=account.role, account_id=account.id)

    async def registration_policy(self) -> RegistrationPolicy:
        value = await self._store.get_setting(POLICY_KEY)
        return RegistrationPolicy(value) if value else RegistrationPolicy.CLOSED

    async def set_registration_policy(self, policy: RegistrationPolicy) -> None:
        await self._store.set_setting(POLICY_KEY, RegistrationPolicy(policy).value)

    async def register_agent(self, name: str, secret: str, *, vouched: bool = False) -> Account:
        """Self-registration of an agent account, as the registration policy allows.

        OPEN creates an enabled agent; APPROVAL creates it disabled until an admin enables
        it; CLOSED refuses with `Forbidden`, and so does TOKEN (registering with a token
        is `RegistrationService.register_agent`). `vouched` means the transport checked
        a registration credential an admin configured (Flamenco's registration secret):
        that is an admin's consent, so the agent is created enabled whatever the policy.
        """
        policy = await self.registration_policy()
        if not vouched and policy is RegistrationPolicy.CLOSED:
            raise errors.Forbidden("agent self-registration is disabled")
        if not vouched and policy is RegistrationPolicy.TOKEN:
            raise errors.Forbidden("this server registers agents with a registration token only")
        account = await self.add(name, Role.AGENT, secret)
        if not vouched and policy is RegistrationPolicy.APPROVAL:
            agent = await self._store.get_agent(name)
            assert agent is not None
            await self._store.update_agent(agent.id, enabled=False)
        return account

    async def admit_agent(
        self, name: str, *, platform: str, metadata: dict[str, JSONValue] | None = None
    ) -> Agent:
        """Admits an agent that carries no credentials (teeth agents name themselves and
        nothing more), as the registration policy allows.

        A known agent comes back as it is, enabled or still pending. An unknown one is
        created enabled under OPEN, disabled (pending an admin, who enables it) under
        APPROVAL, and refused with `Forbidden` under CLOSED and TOKEN. A name that belongs
        to an agent with an account, or to an agent of another protocol (another
        `platform`), is refused with `Forbidden`: nobody may take it over without its
        secret. Raises `Invalid` for a bad name.
        """
        agent = await self._store.get_agent(check_name(name))
        if agent is not None:
            if agent.account_id is not None or agent.platform not in ("", platform):
                raise errors.Forbidden(f"the agent {name!r} is not a {platform} agent")
            return agent
        policy = await self.registration_policy()
        if policy not in (RegistrationPolicy.OPEN, RegistrationPolicy.APPROVAL):
            raise errors.Forbidden(
                f"unknown agent {name!r}: the registration policy ({policy.value}) "
                "admits known agents only"
            )
        agent = await self._store.add_agent(name, None, self._clock.now())
        fields: dict[str, object] = {
            "platform": platform,
            "enabled": policy is RegistrationPolicy.OPEN,
        }
        if metadata:
            fields["metadata"] = metadata
        return await self._store.update_agent(agent.id, **fields)
