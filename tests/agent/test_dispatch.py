"""Many tasks through real agents: all complete, with the right results, by priority."""

from __future__ import annotations

from datetime import datetime
from itertools import groupby
from typing import Any

from tests.agent.conftest import StartAgent, StartServer, wait_for

TASKS = 1000
PRIORITIES = 5


def _spec(i: int) -> dict[str, object]:
    priority = (i * 7) % PRIORITIES
    if i % 4 == 0:
        return {"type": "shell", "payload": ["echo", f"task {i}"], "priority": priority}
    return {"type": "echo", "payload": {"i": i}, "priority": priority}


def _expected(i: int) -> object:
    if i % 4 == 0:
        return {"exit_code": 0, "output": f"task {i}\n"}
    return {"i": i}


def test_a_thousand_tasks_complete_by_priority(
    start_server: StartServer, start_agent: StartAgent
) -> None:
    server = start_server()
    for name in ("a1", "a2"):
        server.api.add_agent(name)
    created = server.api.submit(*(_spec(i) for i in range(TASKS)))
    index = {t["id"]: i for i, t in enumerate(created)}

    agents = [start_agent(server, name, "--burst", "--concurrency", "4") for name in ("a1", "a2")]
    assert [a.wait(60) for a in agents] == [0, 0]

    tasks = server.api.tasks()
    assert len(tasks) == TASKS
    assert {t["status"] for t in tasks} == {"completed"}
    assert all(t["result"] == _expected(index[t["id"]]) for t in tasks)
    assert {t["attempt"] for t in tasks} == {1}
    assert {t["agent_id"] for t in tasks} == {1, 2}  # both agents took work

    # Each agent claims for its free slots, always the best tasks queued, so in the order
    # of its claims the tasks go by priority (highest first), then by id. Tasks claimed
    # together (one transaction: one claimed_at) are the best ones, in that order too.
    def claim_order(t: dict[str, Any]) -> tuple[int, datetime, int, int]:
        return (t["agent_id"], datetime.fromisoformat(t["claimed_at"]), -t["priority"], t["id"])

    by_agent = sorted(tasks, key=claim_order)
    for _, claimed in groupby(by_agent, key=lambda t: t["agent_id"]):
        order = [(-t["priority"], t["id"]) for t in claimed]
        assert order == sorted(order)


def test_a_task_queued_later_is_pushed_at_once(
    start_server: StartServer, start_agent: StartAgent
) -> None:
    server = start_server(poll_interval=30)  # a wake-up, not the fallback poll, must do it
    server.api.add_agent("a1")
    agent = start_agent(server, "a1")
    wait_for(lambda: server.api.call("GET", "/api/v1/agents/a1")["online"], 20, "the agent online")
    [task] = server.api.submit({"type": "echo", "payload": "now"})
    done = wait_for(
        lambda: (t := server.api.task(task["id"]))["status"] == "completed" and t, 10, "the task"
    )
    assert done["result"] == "now"
    assert agent.terminate() == 0
