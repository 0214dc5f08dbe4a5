"""`taskfleet job …` and `taskfleet worker status …` against a real server: the click
groups run in a thread (they block on HTTP) while the server serves on the test's loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from taskfleet.cli_jobs import job, worker
from tests.api.conftest import Live
from tests.dialects.flamenco_worker import Worker
from tests.dialects.test_flamenco import ECHO_AND_SLEEP, open_registration
from tests.dialects.test_flamenco import worker as registered_worker

API_KEY = "cli-test-key"
JOB = {
    "name": "from the cli",
    "type": "sleep",
    "priority": 5,
    "tasks": [
        {"name": "first", "task_type": "sleep", "commands": ECHO_AND_SLEEP},
        {"name": "second", "task_type": "sleep", "commands": ECHO_AND_SLEEP, "parents": [0]},
    ],
}


async def cli(live: Live, home: Path, group: object, *args: str, stdin: str = "") -> Result:
    runner = CliRunner()
    obj = {"server_url": live.base_url, "token": API_KEY, "home": str(home)}
    invoke = runner.invoke
    env = {"COLUMNS": "200"}  # room for the whole table
    return await asyncio.to_thread(invoke, group, list(args), input=stdin, obj=obj, env=env)


@pytest.mark.settings(api_keys=(API_KEY,))
async def test_jobs_and_worker_control_from_the_cli(
    live: Live, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    await open_registration(admin)
    me: Worker = await registered_worker(live)
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(JOB))

    submitted = await cli(live, tmp_path, job, "submit", str(spec))
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    from_stdin = await cli(live, tmp_path, job, "submit", "-", stdin=json.dumps(JOB))
    assert from_stdin.exit_code == 0 and int(from_stdin.stdout) == int(job_id) + 1

    task = await me.task()
    await me.finish(task["_id"], "failed")  # the only worker failed it: nobody is left
    listed = await cli(live, tmp_path, job, "list", "--json")
    assert [j["status"] for j in json.loads(listed.stdout)] == ["queued", "failed"]
    table = await cli(live, tmp_path, job, "list")
    assert "from the cli" in table.stdout and "DONE" in table.stdout
    shown = json.loads((await cli(live, tmp_path, job, "show", job_id)).stdout)
    assert (shown["id"], shown["total"], shown["counts"]) == (int(job_id), 2, {"failed": 2})
    requeued = await cli(live, tmp_path, job, "requeue-failed", job_id)
    tasks = (await admin.get("/api/v1/tasks", params={"job": job_id})).json()["tasks"]
    ids = " ".join(str(t["id"]) for t in tasks)
    assert requeued.stdout == f"Job {job_id}: requeued 2 tasks: {ids}.\n"
    assert (await me.task())["_id"] == task["_id"]  # the failure is forgotten

    asleep = await cli(live, tmp_path, worker, "status", me.id, "asleep", "--lazy")
    assert asleep.exit_code == 0 and "asleep requested (after its current task)" in asleep.stdout
    agent = (await admin.get(f"/api/v1/agents/{me.id}")).json()
    assert (agent["requested_status"], agent["requested_lazy"]) == ("asleep", True)
    assert (await me.task())["_id"] == task["_id"]  # lazy: the current task first
    await me.finish(task["_id"])
    locked = await me.fetch()
    assert (locked.status_code, locked.json()) == (423, {"status_requested": "asleep"})


@pytest.mark.settings(api_keys=(API_KEY,))
async def test_cli_errors_are_clean(live: Live, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert (await cli(live, tmp_path, job, "submit", str(bad))).exit_code == 2
    bad.write_text(json.dumps({"name": "x", "tasks": "all of them"}))
    refused = await cli(live, tmp_path, job, "submit", str(bad))
    assert refused.exit_code == 1 and "Error: tasks" in refused.output
    missing = await cli(live, tmp_path, job, "show", "999")
    assert missing.exit_code == 1 and "no job 999" in missing.output
    nobody = await cli(live, tmp_path, worker, "status", "ghost", "awake")
    assert nobody.exit_code == 1 and "no agent named 'ghost'" in nobody.output
    assert (await cli(live, tmp_path, worker, "status", "ghost", "dancing")).exit_code == 2
