"""Registration tokens in the native API (`POST /register` with `token`), agents' public keys
proven by signature, and task payloads sealed to an agent's key."""

from __future__ import annotations

import httpx
import pytest

from taskfleet.core import crypto, errors
from taskfleet.core.registration import key_proof_text
from tests.api.conftest import Live, assert_problem, claim


async def new_token(admin: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await admin.post("/api/v1/registration-tokens", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


async def test_the_token_policy_registers_agents_with_a_token(
    live: Live, admin: httpx.AsyncClient
) -> None:
    await admin.put("/api/v1/registration", json={"policy": "token"})
    created = await new_token(admin, name="rack 4")
    anonymous = live.client()
    body = {"name": "rack4-1", "secret": "pw"}

    refused = await anonymous.post("/api/v1/register", json=body)
    assert "token" in assert_problem(refused, 403)["detail"]
    wrong = await anonymous.post("/api/v1/register", json={**body, "token": "0" * 40})
    assert_problem(wrong, 401)
    registered = await anonymous.post("/api/v1/register", json={**body, "token": created["token"]})
    assert registered.status_code == 201, registered.text
    agent = registered.json()
    assert (agent["name"], agent["enabled"], agent["groups"]) == ("rack4-1", True, ["all-hosts"])
    taken = await anonymous.post("/api/v1/register", json={**body, "token": created["token"]})
    assert_problem(taken, 409)

    (listed,) = (await admin.get("/api/v1/registration-tokens")).json()
    assert (listed["name"], listed["uses"], listed["token"]) == ("rack 4", 1, None)
    revoked = await admin.delete(f"/api/v1/registration-tokens/{listed['id']}")
    assert revoked.json()["revoked_at"] is not None
    again = {"name": "rack4-2", "secret": "pw", "token": created["token"]}
    assert_problem(await anonymous.post("/api/v1/register", json=again), 401)
    assert_problem(await admin.delete("/api/v1/registration-tokens/99"), 404)
    assert_problem(await anonymous.get("/api/v1/registration-tokens"), 401)


async def test_expiring_tokens(live: Live, admin: httpx.AsyncClient) -> None:
    created = await new_token(admin, expires_in=3600)
    assert created["expires_at"] is not None
    assert_problem(await admin.post("/api/v1/registration-tokens", json={"expires_in": 0}), 422)


async def test_sealed_payloads_open_only_with_the_agents_key(
    live: Live, admin: httpx.AsyncClient
) -> None:
    agent = await live.agent("vault", hello=True)
    await live.agent("plain", hello=True)
    key = crypto.generate_private_key(2048)
    public_key = crypto.public_pem(key.public_key())
    forged = crypto.sign(key, key_proof_text("plain"))
    bad = await agent.put(
        "/api/v1/agent/public-key", json={"public_key": public_key, "signature": forged}
    )
    assert_problem(bad, 400)
    proof = {"public_key": public_key, "signature": crypto.sign(key, key_proof_text("vault"))}
    proven = await agent.put("/api/v1/agent/public-key", json=proof)
    assert proven.status_code == 200 and proven.json()["verified"] is True

    secret = {"password": "hunter2", "rows": [1, 2]}
    response = await admin.post(
        "/api/v1/tasks/sealed", json={"type": "echo", "agent": "vault", "payload": secret}
    )
    assert response.status_code == 201, response.text
    (stored,) = response.json()
    assert crypto.is_sealed(stored["payload"]) and "hunter2" not in response.text
    task = await claim(agent)
    assert task["id"] == stored["id"] and crypto.unseal(key, task["payload"]) == secret
    other = crypto.generate_private_key(2048)
    with pytest.raises(errors.Invalid):
        crypto.unseal(other, task["payload"])

    no_key = await admin.post("/api/v1/tasks/sealed", json={"type": "echo", "agent": "plain"})
    assert "no verified public key" in assert_problem(no_key, 409)["detail"]
    anyone = await admin.post("/api/v1/tasks/sealed", json={"type": "echo"})
    assert_problem(anyone, 400)
    by_admin = {"public_key": public_key}
    set_by_admin = await admin.put("/api/v1/agents/plain/public-key", json=by_admin)
    assert set_by_admin.json()["verified"] is True
    bad_key = await admin.put("/api/v1/agents/plain/public-key", json={"public_key": "x"})
    assert_problem(bad_key, 400)
