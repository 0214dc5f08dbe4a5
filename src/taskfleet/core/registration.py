"""Registration tokens, hosts that enroll with them, and the agents' public keys.

An admin creates a registration token and hands it to the hosts it may register; only the
token's SHA-256 is kept. A host then either

* registers an agent account with a name and secret (the native `POST /api/v1/register`,
  which the `token` registration policy requires a token for), or
* enrolls with its RSA public key (Django Remotes): it gets an agent that stays disabled
  until it proves it holds the private key by signing "OK" (the original's proof). Then the
  agent gets a token-only account, a long-lived session token, and is enabled.

Hosts registered with a token join the configured group. An agent with a verified public key
can be sent sealed task payloads that only it can open (`seal`).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import replace

from taskfleet.core import crypto, errors
from taskfleet.core.accounts import AccountService, check_name, token_digest
from taskfleet.core.models import Agent, Enrollment, NewTask, RegistrationToken, TargetKind
from taskfleet.core.ports import Clock, Store

PROOF_TEXT = "OK"  #: what a Django Remotes host signs to prove it holds its private key
HOST_TOKEN_BYTES = 20  #: 40 hex digits, the shape of the original's DRF tokens
REGISTRATION_TOKEN_BYTES = 20
HOST_TOKEN_TTL_SECONDS = (
    100 * 365 * 86400
)  #: host tokens do not expire; deleting the agent ends them
#: The secret hash of a token-only account: not an argon2 hash, so no secret ever matches.
TOKEN_ONLY = "!token-only"
MAX_TOKEN_NAME = 200
MAX_EXPIRY_SECONDS = 10 * 365 * 86400
DEFAULT_GROUP = "all-hosts"


def key_proof_text(agent_name: str) -> str:
    """What a native agent signs to prove it holds the key it sends (its name is the proof's
    context, so a signature made for one agent proves nothing for another)."""
    return f"taskfleet-key:{agent_name}"


class RegistrationService:
    def __init__(
        self, store: Store, clock: Clock, accounts: AccountService, group: str = DEFAULT_GROUP
    ) -> None:
        self._store = store
        self._clock = clock
        self._accounts = accounts
        self.group = check_name(group) if group else ""

    # -- tokens ---------------------------------------------------------------------------

    async def create_token(
        self, name: str, expires_in: float | None = None
    ) -> tuple[RegistrationToken, str]:
        """Returns the new token's record and the token itself (shown only now)."""
        if not isinstance(name, str) or len(name) > MAX_TOKEN_NAME:
            raise errors.Invalid(f"a token's name must be at most {MAX_TOKEN_NAME} characters")
        if expires_in is not None and not 0 < expires_in <= MAX_EXPIRY_SECONDS:
            raise errors.Invalid("expires_in must be positive and at most 10 years")
        now = self._clock.now()
        expires_at = None if expires_in is None else now + expires_in
        token = secrets.token_hex(REGISTRATION_TOKEN_BYTES)
        created = await self._store.add_registration_token(
            name, token_digest(token), expires_at, now
        )
        return created, token

    async def tokens(self) -> list[RegistrationToken]:
        return await self._store.list_registration_tokens()

    async def revoke_token(self, token_id: int) -> RegistrationToken:
        """Hosts can no longer register or verify with it; registered ones stay. Raises
        `NotFound`."""
        return await self._store.revoke_registration_token(token_id, self._clock.now())

    async def check_token(self, token: str) -> RegistrationToken:
        """The usable token. Raises `Unauthorized` alike for unknown, revoked and expired."""
        found = None
        if isinstance(token, str) and 0 < len(token) <= 1024:
            found = await self._store.registration_token(token_hash=token_digest(token))
        if found is None or not found.usable(self._clock.now()):
            raise errors.Unauthorized("Invalid token.")
        return found

    # -- agents registering with a name and secret -----------------------------------------

    async def register_agent(self, name: str, secret: str, token: str) -> Agent:
        """Creates an enabled agent account with a registration token, whatever the
        registration policy; the agent joins the configured group. Raises `Unauthorized`,
        `Invalid`, or `Conflict` when the name is taken."""
        found = await self.check_token(token)
        await self._accounts.register_agent(name, secret, vouched=True)
        await self._store.count_registration_token_use(found.id, self._clock.now())
        agent = await self._store.get_agent(name)
        assert agent is not None
        if self.group:
            agent = await self._store.set_agent_groups(agent.id, [self.group], self._clock.now())
        return agent

    # -- hosts enrolling with a public key (Django Remotes) --------------------------------

    async def enroll(self, token: str, public_key: object) -> tuple[Enrollment, Agent]:
        """Registers a host by its public key: a disabled, unverified agent. Raises
        `Unauthorized` for the token and `Invalid("Invalid PEM key")`."""
        found = await self.check_token(token)
        key = crypto.load_public_key(public_key)
        now = self._clock.now()
        enrollment = await self._store.add_enrollment(
            str(uuid.uuid4()), crypto.public_pem(key), found.id, now
        )
        await self._store.count_registration_token_use(found.id, now)
        agent = await self._store.get_agent_by_id(enrollment.agent_id)
        assert agent is not None
        return enrollment, agent

    async def verify(self, token: str, host_uuid: object, signature: object) -> tuple[Agent, str]:
        """The host proves it holds its key: its agent is enabled, verified, joins the
        configured group, and gets a host token, returned here (shown only now).

        Raises `Unauthorized` for the token, `NotFound("Host not found")` for an unknown
        enrollment or one made with another token, `Conflict` when already verified, and
        `Invalid("Invalid signature")`.
        """
        found = await self.check_token(token)
        enrollment = await self._enrollment(host_uuid)
        if enrollment is None or enrollment.token_id != found.id:
            raise errors.NotFound("Host not found")
        if enrollment.verified_at is not None:
            raise errors.Conflict("Host already verified")
        agent = await self._store.get_agent_by_id(enrollment.agent_id)
        if agent is None or agent.public_key is None:
            raise errors.NotFound("Host not found")
        if not crypto.verify(crypto.load_public_key(agent.public_key), signature, PROOF_TEXT):
            raise errors.Invalid("Invalid signature")
        host_token = secrets.token_hex(HOST_TOKEN_BYTES)
        now = self._clock.now()
        agent = await self._store.complete_enrollment(
            enrollment.id,
            TOKEN_ONLY,
            self.group,
            token_digest(host_token),
            now + HOST_TOKEN_TTL_SECONDS,
            now,
        )
        return agent, host_token

    async def _enrollment(self, host_uuid: object) -> Enrollment | None:
        try:
            canonical = str(uuid.UUID(str(host_uuid)))
        except ValueError:
            return None
        return await self._store.enrollment(uuid=canonical)

    async def shared_key(self, agent: Agent) -> bytes:
        """The Fernet key a verified host encrypts its reports with (from its enrollment's
        UUID, as the original). Raises `Forbidden` for an agent that did not enroll."""
        enrollment = await self._store.enrollment(agent_id=agent.id)
        if enrollment is None or enrollment.verified_at is None:
            raise errors.Forbidden("this agent did not enroll with a public key")
        return crypto.uuid_fernet_key(enrollment.uuid)

    # -- the public keys of native agents ------------------------------------------------

    async def set_public_key(self, name: str, public_key: object) -> Agent:
        """An admin sets an agent's key; the admin vouches for it, so it is verified."""
        agent = await self._store.get_agent(name) if isinstance(name, str) else None
        if agent is None:
            raise errors.NotFound(f"no agent named {name!r}")
        pem = crypto.public_pem(crypto.load_public_key(public_key))
        return await self._store.update_agent(agent.id, public_key=pem, verified=True)

    async def prove_key(self, agent: Agent, public_key: object, signature: object) -> Agent:
        """The agent sends its key with its signature of `key_proof_text(name)`; the key is
        stored verified. Raises `Invalid` for a bad key or signature."""
        key = crypto.load_public_key(public_key)
        if not crypto.verify(key, signature, key_proof_text(agent.name)):
            raise errors.Invalid("Invalid signature")
        return await self._store.update_agent(
            agent.id, public_key=crypto.public_pem(key), verified=True
        )

    async def seal(self, tasks: Sequence[NewTask]) -> list[NewTask]:
        """The tasks with their payloads sealed to their agents' keys: the server keeps only
        what the agent can open. Each task must target one agent with a verified key."""
        sealed = []
        for task in tasks:
            agent = None
            if task.target_kind is TargetKind.AGENT and isinstance(task.target, str):
                agent = await self._store.get_agent(task.target)
            if agent is None:
                raise errors.Invalid("a sealed task must target an existing agent")
            if agent.public_key is None or not agent.verified:
                raise errors.Conflict(f"agent {agent.name!r} has no verified public key")
            key = crypto.load_public_key(agent.public_key)
            sealed.append(replace(task, payload=crypto.seal(key, task.payload)))
        return sealed
