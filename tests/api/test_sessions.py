"""Logging in and out, who am I, and API keys from the settings."""

from __future__ import annotations

import httpx
import pytest

from taskfleet.core.models import Role
from tests.api.conftest import ADMIN_SECRET, Live, assert_problem


async def test_login_me_logout(live: Live) -> None:
    await live.add_account("alice", Role.ADMIN, ADMIN_SECRET)
    anonymous = live.client()
    response = await anonymous.post("/api/v1/login", json={"name": "alice", "secret": ADMIN_SECRET})
    assert response.status_code == 200
    session = response.json()
    assert session["expires_in"] > 0
    token = session["token"]
    bearer = {"Authorization": f"Bearer {token}"}

    me = await anonymous.get("/api/v1/me", headers=bearer)
    assert me.json() == {"name": "alice", "role": "admin"}

    response = await anonymous.post("/api/v1/logout", headers=bearer)
    assert response.status_code == 204
    assert_problem(await anonymous.get("/api/v1/me", headers=bearer), 401)
    assert_problem(await anonymous.post("/api/v1/logout", headers=bearer), 401)


async def test_login_refuses_wrong_secret_and_unknown_name(live: Live) -> None:
    await live.add_account("alice", Role.ADMIN, ADMIN_SECRET)
    client = live.client()
    wrong = await client.post("/api/v1/login", json={"name": "alice", "secret": "nope"})
    unknown = await client.post("/api/v1/login", json={"name": "bob", "secret": "nope"})
    # One message for both, so callers cannot probe which names exist.
    assert assert_problem(wrong, 401)["detail"] == assert_problem(unknown, 401)["detail"]
    assert "www-authenticate" in wrong.headers


async def test_agent_sees_itself_with_basic_auth(live: Live) -> None:
    agent = await live.agent("host-1")
    me = await agent.get("/api/v1/me")
    assert me.json() == {"name": "host-1", "role": "agent"}


async def test_agent_can_log_in_for_a_session(live: Live) -> None:
    await live.agent("host-1")
    client = await live.login("host-1", "agent-secret")
    assert (await client.get("/api/v1/me")).json()["role"] == "agent"


@pytest.mark.settings(api_keys=("k", "other-key"))
async def test_api_key_is_an_admin_bearer_token(live: Live) -> None:
    client = live.client(headers={"Authorization": "Bearer k"})
    assert (await client.get("/api/v1/me")).json() == {"name": "api-key", "role": "admin"}
    assert (await client.get("/api/v1/accounts")).status_code == 200
    wrong = live.client(headers={"Authorization": "Bearer kk"})
    assert_problem(await wrong.get("/api/v1/accounts"), 401)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "bearer\tnope",
        "Bearer nope",
        "Basic",
        "Basic !!!notbase64",
        "Basic bm9jb2xvbg==",  # "nocolon"
        "Basic //79/Q==",  # not UTF-8
        "Digest abc",
        "Basic " + "QUFB" * 100,
    ],
)
async def test_missing_or_wrong_credentials_are_401(live: Live, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    client = live.client(headers=headers)
    for path in ("/api/v1/me", "/api/v1/accounts", "/api/v1/tasks"):
        body = assert_problem(await client.get(path), 401)
        assert "detail" in body


async def test_basic_auth_with_wrong_secret_is_401(live: Live) -> None:
    await live.agent("host-1")
    client = live.client(auth=httpx.BasicAuth("host-1", "wrong"))
    assert_problem(await client.post("/api/v1/agent/claim", params={"wait": 0}), 401)
    nobody = live.client(auth=httpx.BasicAuth("nobody", "wrong"))
    assert_problem(await nobody.post("/api/v1/agent/claim", params={"wait": 0}), 401)
