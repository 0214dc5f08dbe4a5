"""Jobs on a Flamenco fleet: dependencies, several commands per task, two workers, soft
failures, the blacklist, requeueing a job's failed tasks, and job priority."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import Live
from tests.dialects.flamenco_worker import Worker, hex_id, log_lines
from tests.dialects.test_flamenco import native, open_registration, submit, worker

TYPES = ["file-management", "blender-render", "video-encoding"]


def render(frame: int) -> dict[str, Any]:
    return {
        "name": f"render-{frame}",
        "task_type": "blender-render",
        "priority": 10 - frame,  # earlier frames first
        "parents": ["prepare"],
        "commands": [
            {"name": "echo", "settings": {"message": f"frame {frame}"}},
            {"name": "exec", "settings": {"cmd": f"blender -f {frame}"}},
            {"name": "move_to_final", "settings": {"src": f"/tmp/{frame}", "dest": "/out"}},
        ],
    }


RENDER_JOB = {
    "name": "shot 10",
    "type": "blender-render",
    "priority": 50,
    "settings": {"project": "p1", "user": "ann"},
    "tasks": [
        {
            "name": "prepare",
            "task_type": "file-management",
            "commands": [{"name": "create_python_file", "settings": {"filepath": "/tmp/x.py"}}],
        },
        *(render(frame) for frame in range(1, 5)),
        {
            "name": "encode",
            "task_type": "video-encoding",
            "parents": [1, 2, 3, "render-4"],
            "commands": [{"name": "exec", "settings": {"cmd": "ffmpeg"}}],
        },
    ],
}


async def run(me: Worker, expected: str, status: str = "completed") -> dict[str, Any]:
    """The worker fetches a task, checks it is `expected`, runs its commands and reports."""
    task = await me.task()
    assert task["name"] == expected, (task["name"], expected)
    for index, command in enumerate(task["commands"]):
        activity = {"activity": f"starting {command['name']}", "current_command_idx": index}
        assert (await me.update(task["_id"], **activity)).status_code == 204
    assert await me.may_i_run(task["_id"]) == {"may_keep_running": True}
    await me.finish(task["_id"], status, f"{expected}: {status}")
    return task


async def test_a_job_with_dependencies_across_two_workers_and_a_blacklist(
    live: Live, admin: httpx.AsyncClient
) -> None:
    await open_registration(admin)
    alice = await worker(live, "alice", task_types=TYPES)
    bob = await worker(live, "bob", task_types=TYPES)
    job = await submit(admin, **RENDER_JOB)
    ids = {t["payload"]["name"]: t["id"] for t in job["tasks"]}

    # Only "prepare" has no parents: bob finds nothing to do while it runs.
    prepared = await alice.task()
    assert (prepared["name"], prepared["project"], prepared["user"]) == ("prepare", "p1", "ann")
    assert (await bob.fetch()).status_code == 204
    await alice.finish(prepared["_id"])

    # Alice fails three renders: each one goes back to the queue for bob (soft failure),
    # and after the third she is blacklisted for this job's renders.
    for frame in (1, 2, 3):
        await run(alice, f"render-{frame}", "failed")
        state = await native(admin, f"/tasks/{ids[f'render-{frame}']}")
        assert state["status"] == "queued" and "exit 1" in state["error"]
    assert (await alice.fetch()).status_code == 204  # render-4 is blacklisted for her
    summary = await native(admin, f"/jobs/{job['id']}")
    assert [(b["agent"], b["task_type"]) for b in summary["blacklist"]] == [
        (alice.id, "blender-render")
    ]

    # Bob renders all four; the documents name who failed them before.
    first = await run(bob, "render-1")
    assert first["failed_by_workers"] == [{"id": alice.id, "identifier": alice.id}]
    assert first["parents"] == [hex_id(ids["prepare"])]
    for frame in (2, 3, 4):
        await run(bob, f"render-{frame}")
    # Alice is not blacklisted for encoding: she takes the last task.
    encoded = await run(alice, "encode")
    assert len(encoded["parents"]) == 4

    summary = await native(admin, f"/jobs/{job['id']}")
    assert (summary["status"], summary["counts"]) == ("completed", {"completed": 6})
    failures = await native(admin, f"/tasks/{ids['render-2']}/failures")
    assert [(f["agent"], f["attempt"]) for f in failures] == [(alice.id, 1)]


async def test_a_task_fails_for_good_when_no_worker_is_left(
    live: Live, admin: httpx.AsyncClient
) -> None:
    await open_registration(admin)
    alice = await worker(live, "alice", task_types=TYPES)
    bob = await worker(live, "bob", task_types=TYPES)
    job = await submit(admin, **RENDER_JOB)
    await run(alice, "prepare")
    await run(alice, "render-1", "failed")
    await run(bob, "render-1", "failed")

    state = await native(admin, f"/tasks/{job['tasks'][1]['id']}")
    assert state["status"] == "failed"
    assert state["error"].startswith("no agent left to run it")
    # The encode step waited on render-1, so it can never run either.
    summary = await native(admin, f"/jobs/{job['id']}")
    assert summary["status"] == "failed"
    assert summary["counts"] == {"completed": 1, "failed": 2, "queued": 3}

    requeued = await admin.post(f"/api/v1/jobs/{job['id']}/requeue-failed")
    assert requeued.status_code == 200, requeued.text
    assert sorted(requeued.json()["requeued"]) == [job["tasks"][1]["id"], job["tasks"][5]["id"]]
    await run(alice, "render-1")  # her earlier failure is forgotten


async def test_job_priority_comes_before_task_priority(
    live: Live, admin: httpx.AsyncClient
) -> None:
    await open_registration(admin)
    me = await worker(live, task_types=["sleep"])
    one = [{"name": "t", "task_type": "sleep", "priority": 100, "commands": [{"name": "echo"}]}]
    await submit(admin, name="low", priority=1, tasks=one)
    urgent = [{"name": "u", "task_type": "sleep", "priority": -5, "commands": [{"name": "echo"}]}]
    await submit(admin, name="high", priority=90, tasks=urgent)
    first = await me.task()
    assert (first["name"], first["job_priority"]) == ("u", 90)
    assert first["commands"] == [{"name": "echo", "settings": {}}]
    await me.finish(first["_id"])
    assert (await me.task())["name"] == "t"


async def test_a_canceled_task_stops_its_worker(live: Live, admin: httpx.AsyncClient) -> None:
    await open_registration(admin)
    me = await worker(live)
    job = await submit(admin)
    task = await me.task()
    assert (await admin.post(f"/api/v1/tasks/{job['tasks'][0]['id']}/cancel")).status_code == 200
    assert await me.may_i_run(task["_id"]) == {
        "may_keep_running": False,
        "reason": "task is cancel-requested",
    }
    await me.finish(task["_id"], "canceled", "stopped")
    assert (await native(admin, f"/tasks/{job['tasks'][0]['id']}"))["status"] == "cancelled"
    # An update for a task that no longer runs is accepted and its status ignored.
    assert (await me.update(task["_id"], "active", log=log_lines("late"))).status_code == 204
    assert (await native(admin, f"/tasks/{job['tasks'][0]['id']}"))["status"] == "cancelled"


async def test_the_native_job_api_refuses_bad_jobs(admin: httpx.AsyncClient) -> None:
    one = {"name": "t", "task_type": "sleep", "commands": [{"name": "echo"}]}
    cases: list[tuple[dict[str, Any], int]] = [
        ({"name": "", "tasks": [one]}, 422),
        ({"name": "j", "tasks": [{**one, "parents": ["nope"]}]}, 400),
        ({"name": "j", "tasks": [{**one, "parents": [True]}]}, 422),
        ({"name": "j", "tasks": [{**one, "name": "a", "parents": ["b"]},
                                 {**one, "name": "b", "parents": ["a"]}]}, 400),
        ({"name": "j", "tasks": [{**one, "commands": []}]}, 422),
        ({"name": "j", "tasks": [{**one, "commands": [{"name": "x", "settings": 1}]}]}, 422),
        ({"name": "j", "fail_limit": 0, "tasks": [one]}, 422),
        ({"name": "j", "tasks": [one], "extra": 1}, 422),
    ]  # fmt: skip
    for body, status in cases:
        answer = await admin.post("/api/v1/jobs", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    assert (await native(admin, "/jobs")) == []
    for path in ("/jobs/99", "/jobs/99/outputs", "/tasks/99/failures"):
        assert (await admin.get(f"/api/v1{path}")).status_code == 404
    assert (await admin.post("/api/v1/jobs/99/requeue-failed")).status_code == 404
    assert (await admin.get("/api/v1/jobs/0")).status_code == 422
