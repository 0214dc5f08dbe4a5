"""Sealed payloads: the server keeps only ciphertext, and only the agent holding the private
key can open it (docs/dialects/remotes.md, "Encryption for native agents")."""

from __future__ import annotations

from pathlib import Path

from taskfleet.core import crypto
from tests.agent.conftest import Server, StartAgent, StartServer, wait_for


def _sealed_echo(server: Server, name: str, key: crypto.PrivateKey) -> dict[str, object]:
    public = crypto.public_pem(key.public_key())
    server.api.call("PUT", f"/api/v1/agents/{name}/public-key", json={"public_key": public})
    (task,) = server.api.call(
        "POST",
        "/api/v1/tasks/sealed",
        json={"type": "echo", "payload": {"password": "hunter2"}, "agent": name},
    )
    assert crypto.is_sealed(task["payload"]) and "hunter2" not in str(task["payload"])
    return dict(task)


def _finished(server: Server, task_id: int) -> dict[str, object] | None:
    task = server.api.task(task_id)
    return task if task["status"] in ("completed", "failed") else None


def test_the_agent_with_the_key_opens_the_payload(
    start_server: StartServer, start_agent: StartAgent, tmp_path: Path
) -> None:
    server = start_server()
    server.api.add_agent("vault")
    key = crypto.generate_private_key(2048)
    pem = tmp_path / "vault.pem"
    pem.write_bytes(crypto.private_pem(key))
    task = _sealed_echo(server, "vault", key)

    agent = start_agent(server, "vault", "--private-key", str(pem), "--burst")
    assert agent.wait(60) == 0
    done = wait_for(lambda: _finished(server, int(task["id"])), 30, "the sealed task")
    assert (done["status"], done["result"]) == ("completed", {"password": "hunter2"})
    assert crypto.is_sealed(server.api.task(int(task["id"]))["payload"])


def test_an_agent_without_the_key_fails_the_task_clearly(
    start_server: StartServer, start_agent: StartAgent
) -> None:
    server = start_server()
    server.api.add_agent("nokey")
    task = _sealed_echo(server, "nokey", crypto.generate_private_key(2048))

    agent = start_agent(server, "nokey", "--burst")
    assert agent.wait(60) == 0
    done = wait_for(lambda: _finished(server, int(task["id"])), 30, "the sealed task")
    assert done["status"] == "failed"
    assert "sealed" in str(done["error"]) and "--private-key" in str(done["error"])
