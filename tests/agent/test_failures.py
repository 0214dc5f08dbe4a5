"""Agents and servers that die, and tasks that are cancelled: nothing is lost or doubled."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.agent.conftest import (
    AgentProcess,
    Api,
    StartAgent,
    StartServer,
    free_port,
    pid_gone,
    wait_for,
)


def _status(api: Api, task_id: int, *wanted: str) -> dict[str, Any] | None:
    task = api.task(task_id)
    return task if task["status"] in wanted else None


def test_a_killed_agents_task_is_requeued_and_done_by_another(
    start_server: StartServer, start_agent: StartAgent
) -> None:
    server = start_server(agent_grace_seconds=0.5)
    api = server.api
    api.add_agent("a1")
    api.add_agent("a2")
    [task] = api.submit({"type": "sleep", "payload": {"seconds": 2}})
    first = start_agent(server, "a1")
    wait_for(lambda: api.tasks(agent="a1", status="active"), 20, "a1 running the task")
    second = start_agent(server, "a2")
    wait_for(lambda: api.call("GET", "/api/v1/agents/a2")["online"], 20, "a2 online")

    first.kill9()
    done = wait_for(lambda: _status(api, task["id"], "completed", "failed"), 30, "the task")

    assert done["status"] == "completed"
    assert done["result"] == {"slept": 2.0}
    assert done["attempt"] == 2  # one lost attempt, one recorded result
    assert [t["id"] for t in api.tasks(agent="a2")] == [task["id"]]
    assert second.terminate() == 0


def _spooled_results(agents: list[AgentProcess]) -> set[tuple[int, int]]:
    found = set()
    for agent in agents:
        for method, params in agent.spooled():
            report = json.loads(params)
            if method == "task_status" and report["state"] == "complete":
                found.add((report["task_id"], report["attempt"]))
    return found


def test_results_made_while_the_server_is_down_arrive_from_the_spool(
    start_server: StartServer, start_agent: StartAgent
) -> None:
    server = start_server(lease_seconds=15)
    api = server.api
    for name in ("a1", "a2"):
        api.add_agent(name)
    created = api.submit(
        *({"type": "shell", "payload": ["sh", "-c", f"sleep 0.2; echo t{i}"]} for i in range(40))
    )
    expected = {t["id"]: f"t{i}\n" for i, t in enumerate(created)}
    agents = [start_agent(server, name, "--concurrency", "2") for name in ("a1", "a2")]
    wait_for(lambda: len(api.tasks(status="completed")) >= 6, 30, "some tasks done")

    server.kill()
    spooled = wait_for(lambda: _spooled_results(agents), 10, "results waiting in a spool")
    server.start()
    wait_for(lambda: len(api.tasks(status="completed")) == len(created), 60, "every task done")

    tasks = {t["id"]: t for t in api.tasks()}
    assert all(t["result"]["output"] == expected[i] for i, t in tasks.items())
    for task_id, attempt in spooled:
        assert tasks[task_id]["attempt"] == attempt  # the spooled result is the one recorded
    assert [a.terminate() for a in agents] == [0, 0]
    assert [a.spooled() for a in agents] == [[], []]


def _logged_pids(api: Api, task_id: int) -> list[int] | None:
    pids = [int(p) for p in re.findall(r"(?:child|leader) (\d+)", api.logs(task_id))]
    return pids if len(pids) == 3 else None


def test_cancelling_a_shell_task_kills_its_process_group(
    start_server: StartServer, start_agent: StartAgent
) -> None:
    server = start_server()
    api = server.api
    api.add_agent("a1")
    script = "sleep 60 & echo child $!; sleep 60 & echo child $!; echo leader $$; wait"
    [task] = api.submit({"type": "shell", "payload": script})
    agent = start_agent(server, "a1")

    pids = wait_for(lambda: _logged_pids(api, task["id"]), 20, "the pids in the task log")
    assert not any(pid_gone(p) for p in pids)

    api.call("POST", f"/api/v1/tasks/{task['id']}/cancel")
    done = wait_for(lambda: _status(api, task["id"], "cancelled", "failed"), 20, "the cancel")

    assert done["status"] == "cancelled"
    wait_for(lambda: all(pid_gone(p) for p in pids), 5, "the whole process group gone")
    assert agent.terminate() == 0


def test_sigterm_finishes_running_tasks_then_exits(
    start_server: StartServer, start_agent: StartAgent
) -> None:
    server = start_server()
    api = server.api
    api.add_agent("a1")
    [task] = api.submit({"type": "sleep", "payload": 1})
    agent = start_agent(server, "a1")
    wait_for(lambda: api.tasks(agent="a1", status="active"), 20, "the task running")

    assert agent.terminate() == 0
    assert api.task(task["id"])["status"] == "completed"


def test_sigterm_hands_back_what_does_not_finish_in_time(
    start_server: StartServer, start_agent: StartAgent
) -> None:
    server = start_server()
    api = server.api
    api.add_agent("a1")
    [task] = api.submit({"type": "sleep", "payload": 60})
    agent = start_agent(server, "a1", "--drain-seconds", "0.2")
    wait_for(lambda: api.tasks(agent="a1", status="active"), 20, "the task running")

    assert agent.terminate() == 0
    back = api.task(task["id"])
    assert (back["status"], back["attempt"]) == ("queued", 1)


def test_sigterm_without_a_server_exits_at_once(start_agent: StartAgent) -> None:
    agent = start_agent(f"http://127.0.0.1:{free_port()}", "lonely", "--backoff-max", "30")
    wait_for(lambda: "cannot reach" in agent.log.read_text(), 20, "a failed connect")
    assert agent.terminate(timeout=5) == 0
