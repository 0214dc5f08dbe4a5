"""Plugin handlers from entry points, and status changes pushed to a running agent."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from tests.agent.conftest import Api, StartAgent, StartServer, wait_for

PLUGIN = """
from taskfleet.agent.handlers import HandlerError


async def run(task, report):
    await report.progress(50, 1.0, "halfway")
    await report.log("rendering\\n")
    await report.output({"path": "/tmp/out.png", "bytes": 3})
    await report.event({"rendered": task.id})
    if task.payload == "explode":
        raise HandlerError("the scene is missing")
    return {"frames": task.payload}
"""


def _install_plugin(root: Path) -> None:
    """A distribution on PYTHONPATH declaring a `taskfleet.handlers` entry point."""
    (root / "render_plugin.py").write_text(PLUGIN)
    dist = root / "render_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: render-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [taskfleet.handlers]
            render = render_plugin:run
            """
        )
    )


def test_a_plugin_handler_reports_through_the_agent(
    start_server: StartServer, start_agent: StartAgent, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install_plugin(site)
    server = start_server()
    api = server.api
    api.add_agent("g1")
    ok, bad = api.submit(
        {"type": "render", "payload": 24}, {"type": "render", "payload": "explode"}
    )
    agent = start_agent(server, "g1", "--burst", env={"PYTHONPATH": str(site)})
    assert agent.wait(30) == 0

    done = api.task(ok["id"])
    assert (done["status"], done["result"]) == ("completed", {"frames": 24})
    assert api.logs(ok["id"]) == "rendering\n"
    outputs = api.call("GET", f"/api/v1/tasks/{ok['id']}/outputs")
    assert [o["data"] for o in outputs] == [{"path": "/tmp/out.png", "bytes": 3}]
    events = api.call("GET", "/api/v1/agents/g1/events")
    assert {e["data"]["rendered"] for e in events} == {ok["id"], bad["id"]}
    failed = api.task(bad["id"])
    assert (failed["status"], failed["error"]) == ("failed", "the scene is missing")
    assert "render" in api.call("GET", "/api/v1/agents/g1")["task_types"]


def _agent(api: Api, name: str) -> dict[str, Any]:
    found: dict[str, Any] = api.call("GET", f"/api/v1/agents/{name}")
    return found


def test_status_changes_reach_the_agent(start_server: StartServer, start_agent: StartAgent) -> None:
    server = start_server()
    api = server.api
    api.add_agent("c1")
    agent = start_agent(server, "c1")
    wait_for(lambda: _agent(api, "c1")["online"], 20, "the agent online")
    wait_for(
        lambda: "taskfleet_connected_agents 1.0" in api.client.get("/metrics").text,
        10,
        "the connection counted",
    )

    api.call("PATCH", "/api/v1/agents/c1", json={"requested_status": "asleep"})
    wait_for(lambda: _agent(api, "c1")["status"] == "asleep", 10, "the agent asleep")
    assert _agent(api, "c1")["requested_status"] is None
    [task] = api.submit({"type": "echo", "payload": "later"})
    assert api.task(task["id"])["status"] == "queued"

    api.call("PATCH", "/api/v1/agents/c1", json={"requested_status": "awake"})
    wait_for(lambda: api.task(task["id"])["status"] == "completed", 10, "the task run")

    api.call("PATCH", "/api/v1/agents/c1", json={"requested_status": "shutdown"})
    assert agent.wait(20) == 0
    wait_for(lambda: not _agent(api, "c1")["online"], 10, "the agent offline")
    assert "taskfleet_connected_agents 0.0" in api.client.get("/metrics").text
