"""Registration tokens, enrollment, commands and the crypto helpers, as services on a real
SQLite file with a clock the tests move."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskfleet.bus.local import LocalBus
from taskfleet.config import Settings
from taskfleet.core import crypto, errors
from taskfleet.core.commands import check_command, check_group, parse_result
from taskfleet.core.models import Agent, NewCommand, NewCommandGroup, TaskFilter, TaskStatus
from taskfleet.core.registration import PROOF_TEXT
from taskfleet.services import Services, wire
from taskfleet.store.sql import open_store

START = 1_000_000.0
KEY = crypto.generate_private_key(2048)


class ManualClock:
    def __init__(self) -> None:
        self.t = START

    def now(self) -> float:
        return self.t


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Services]:
    store = await open_store(str(tmp_path / "engine.db"))
    yield wire(Settings(), store, LocalBus(), ManualClock())
    await store.close()


async def enrolled(engine: Services) -> tuple[Agent, str]:
    """A verified host; returns it and its host token."""
    _, token = await engine.registration.create_token("t")
    enrollment, _ = await engine.registration.enroll(token, crypto.public_pem(KEY.public_key()))
    signature = crypto.sign(KEY, PROOF_TEXT)
    return await engine.registration.verify(token, enrollment.uuid, signature)


def test_the_crypto_is_the_originals() -> None:
    host_uuid = uuid.uuid4()
    assert crypto.uuid_fernet_key(str(host_uuid)) == base64.b64encode(host_uuid.hex.encode())
    public = KEY.public_key()
    assert crypto.rsa_decrypt(KEY, crypto.rsa_encrypt(public, "secret")) == "secret"
    assert crypto.verify(public, crypto.sign(KEY, "OK"), "OK")
    assert not crypto.verify(public, crypto.sign(KEY, "OK"), "KO")
    assert not crypto.verify(public, 42, "OK") and not crypto.verify(public, "!!", "OK")
    sealed = crypto.seal(public, {"a": [1, "é"]})
    assert crypto.unseal(KEY, sealed) == {"a": [1, "é"]}
    tampered = {"sealed": {**sealed["sealed"], "data": "x"}}
    broken: list[object] = [{"sealed": {}}, {"other": 1}, None, tampered]
    for bad in broken:
        with pytest.raises(errors.Invalid):
            crypto.unseal(KEY, bad)
    with pytest.raises(errors.Invalid):
        crypto.rsa_decrypt(KEY, "not base64!")
    with pytest.raises(errors.Invalid):
        crypto.load_private_key(b"nope")


async def test_tokens_expire_and_revoke(engine: Services) -> None:
    created, token = await engine.registration.create_token("short", expires_in=60)
    assert (await engine.registration.check_token(token)).id == created.id
    assert isinstance(engine.clock, ManualClock)
    engine.clock.t += 60
    with pytest.raises(errors.Unauthorized):
        await engine.registration.check_token(token)
    _, other = await engine.registration.create_token("long")
    await engine.registration.revoke_token(2)
    for bad in (other, "", "x" * 2000):
        with pytest.raises(errors.Unauthorized):
            await engine.registration.check_token(bad)
    with pytest.raises(errors.Invalid):
        await engine.registration.create_token("n" * 201)
    with pytest.raises(errors.Invalid):
        await engine.registration.create_token("n", expires_in=-1)


async def test_a_verified_host_gets_a_token_only_account(engine: Services) -> None:
    agent, host_token = await enrolled(engine)
    assert (agent.enabled, agent.verified, agent.groups) == (True, True, ("all-hosts",))
    principal = await engine.accounts.resolve_token(host_token)
    assert principal.name == agent.name and not principal.is_admin
    with pytest.raises(errors.Unauthorized):
        await engine.accounts.authenticate(agent.name, "!token-only")
    key = await engine.registration.shared_key(agent)
    enrollment = await engine.store.enrollment(agent_id=agent.id)
    assert enrollment is not None and key == crypto.uuid_fernet_key(enrollment.uuid)


async def test_reports_set_variables_and_fail_without_json(engine: Services) -> None:
    agent, _ = await enrolled(engine)
    commands = engine.commands
    group = await commands.add_group(NewCommandGroup(name="g", host_groups=("all-hosts",)))
    outside = await commands.add_group(NewCommandGroup(name="o", host_groups=("elsewhere",)))
    new = NewCommand(group_id=group.id, name="c", source="x", result_variables=("a", "b"))
    first = await commands.add(new)
    second = await commands.add(
        NewCommand(group_id=group.id, name="d", source="y", variables=("a", "b"))
    )
    hidden = await commands.add(NewCommand(group_id=outside.id, name="h", source="z"))

    task = await commands.report(agent, first.id, "out\x00put", '[{"k": "\\u0000"}]')
    assert task.status is TaskStatus.COMPLETED
    assert task.result == {"output": "out\ufffdput", "result": [{"k": "\ufffd"}]}
    _, variables = await commands.fetch(agent, second.id)
    assert variables == {"a": '{"k": "\\ufffd"}', "b": ""}
    failed = await commands.report(agent, second.id, "", "Traceback: NaN")
    assert failed.status is TaskStatus.FAILED and "Traceback: NaN" in (failed.error or "")
    assert await commands.pending(agent) == []

    with pytest.raises(errors.Forbidden):
        await commands.report(agent, hidden.id, "", "[]")
    with pytest.raises(errors.NotFound):
        await commands.fetch(agent, hidden.id)
    with pytest.raises(errors.TooLarge):
        await commands.report(agent, first.id, "x" * (1024 * 1024), "[]")
    runs = await engine.tasks.find(TaskFilter(type="command"))
    assert [t.id for t in runs] == [task.id, failed.id]


def test_definitions_are_checked() -> None:
    assert parse_result("NaN") is None and parse_result("[" * 5000) is None
    assert parse_result('"x"') == ["x"]
    bad_groups = [
        NewCommandGroup(name=""),
        NewCommandGroup(name="g", order=2**40),
        NewCommandGroup(name="g", starts_at=10, ends_at=5),
        NewCommandGroup(name="g", host_groups=("bad name",)),
    ]
    for group in bad_groups:
        with pytest.raises(errors.Invalid):
            check_group(group)
    bad_commands = [
        NewCommand(group_id=1, name="c", source="x", settings={"k": 1}),  # type: ignore[dict-item]
        NewCommand(group_id=1, name="c", source="x", timeout_seconds=0),
        NewCommand(group_id=1, name="c", source="x", variables=("",)),
        NewCommand(group_id=1, name="c", source=None),  # type: ignore[arg-type]
    ]
    for command in bad_commands:
        with pytest.raises(errors.Invalid):
            check_command(command)
