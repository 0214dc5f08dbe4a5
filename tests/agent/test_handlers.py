"""Handlers and the runner in-process: real subprocesses, a real spool, no mocks."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from taskfleet.agent import handlers, shell
from taskfleet.agent.handlers import Handler, HandlerError, TaskContext
from taskfleet.agent.outbox import Outbox
from taskfleet.agent.runner import Runner
from taskfleet.agent.spool import Spool
from taskfleet.agent.transports import TaskSpec
from taskfleet.core.models import JSONValue
from tests.agent.conftest import pid_gone
from tests.agent.test_spool import Events


class Lines:
    """A reporter that keeps what it is told."""

    def __init__(self) -> None:
        self.logs: list[str] = []
        self.percents: list[float | None] = []

    async def progress(
        self, percent: float | None = None, eta: float | None = None, activity: str = ""
    ) -> None:
        self.percents.append(percent)

    async def log(self, text: str) -> None:
        self.logs.append(text)

    async def output(self, data: JSONValue) -> None:
        pass

    async def event(self, data: JSONValue) -> None:
        pass


def _task(payload: JSONValue, type: str = "shell") -> TaskContext:
    return TaskContext(id=1, attempt=1, type=type, payload=payload, agent="t")


async def test_shell_streams_output_and_returns_the_tail() -> None:
    report = Lines()
    cmd = {"cmd": "for i in 1 2 3; do echo $i; done; echo e >&2", "tail": 2}
    result = await shell.run(_task(cmd), report)
    assert result["exit_code"] == 0
    assert result["output"].count("\n") == 2
    assert sorted(report.logs) == ["1\n", "2\n", "3\n", "stderr: e\n"]


async def test_shell_takes_argv_env_and_cwd(tmp_path: Path) -> None:
    cmd = {
        "cmd": ["sh", "-c", "echo $GREETING; pwd"],
        "env": {"GREETING": "hi"},
        "cwd": str(tmp_path),
    }
    result = await shell.run(_task(cmd), Lines())
    assert result["output"] == f"hi\n{tmp_path}\n"


@pytest.mark.parametrize(
    "payload, message",
    [
        ("echo out; exit 3", "exit code 3\nout\n"),
        ({"cmd": "sleep 30", "timeout": 0.2}, "timed out after 0.2 s"),
        (["/no/such/program"], "cannot run '/no/such/program'"),
        ({"cmd": 5}, "shell needs a command"),
        ({"cmd": "true", "env": {"A": 1}}, "env must be an object of strings"),
    ],
)
async def test_shell_failures_carry_a_message(payload: JSONValue, message: str) -> None:
    with pytest.raises(HandlerError, match=re.escape(message)):
        await shell.run(_task(payload), Lines())


async def test_cancelling_shell_kills_the_process_group() -> None:
    report = Lines()
    script = "sleep 60 & echo $!; sleep 60 & echo $!; wait"
    job = asyncio.create_task(shell.run(_task(script), report))
    while len(report.logs) < 2:
        await asyncio.sleep(0.01)
    pids = [int(line) for line in report.logs]
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    for _ in range(200):
        if all(pid_gone(p) for p in pids):
            break
        await asyncio.sleep(0.01)
    assert all(pid_gone(p) for p in pids)


async def test_sleep_reports_progress() -> None:
    report = Lines()
    assert await handlers.sleep(_task(0.05, "sleep"), report) == {"slept": 0.05}
    assert report.percents[-1] == 100


async def plugin_run(task: TaskContext, report: Any) -> JSONValue:
    return None


class Plugin:
    run = staticmethod(plugin_run)


def test_a_plugin_must_be_an_async_run() -> None:
    assert handlers.as_handler(plugin_run) is plugin_run
    assert handlers.as_handler(Plugin()) is plugin_run
    with pytest.raises(TypeError):
        handlers.as_handler(print)


async def _run_tasks(
    tmp_path: Path,
    registry: Mapping[str, Handler],
    *specs: TaskSpec,
    cancel: tuple[int, int] | None = None,
) -> dict[int | None, dict[str, Any]]:
    outbox = Outbox(Spool(tmp_path / "s.db"), 100, Events())
    runner = Runner(registry, outbox, "t", lambda: None)
    for spec in specs:
        runner.start(spec)
    if cancel is not None:
        await asyncio.sleep(0)
        assert runner.cancel(*cancel)
    assert await runner.wait_idle(5)
    finals = {
        e.task_id: {k: v for k, v in e.params.items() if k in ("state", "result", "msg")}
        for e in outbox.spool.pending()
        if e.final
    }
    outbox.spool.close()
    return finals


def _spec(task_id: int, type: str, payload: JSONValue = None) -> TaskSpec:
    return TaskSpec(task_id=task_id, attempt=1, type=type, payload=payload)


async def test_the_runner_decides_how_a_task_ends(tmp_path: Path) -> None:
    async def broken(task: TaskContext, report: Any) -> JSONValue:
        raise RuntimeError("disk on fire")

    async def not_json(task: TaskContext, report: Any) -> JSONValue:
        return object()

    async def huge_result(task: TaskContext, report: Any) -> JSONValue:
        return "x" * (1024 * 1024 + 1)

    async def huge_output(task: TaskContext, report: Any) -> JSONValue:
        await report.output("x" * (3 * 1024 * 1024))
        return None

    registry = {
        **handlers.builtins(),
        "broken": broken,
        "not_json": not_json,
        "huge_result": huge_result,
        "huge_output": huge_output,
    }
    finals = await _run_tasks(
        tmp_path,
        registry,
        _spec(1, "echo", {"a": 1}),
        _spec(2, "broken"),
        _spec(3, "nope"),
        _spec(4, "not_json"),
        _spec(5, "sleep", 30),
        _spec(6, "huge_result"),
        _spec(7, "huge_output"),
        cancel=(5, 1),
    )
    assert finals[1] == {"state": "complete", "result": {"a": 1}}
    assert finals[2] == {"state": "error", "msg": "RuntimeError: disk on fire"}
    assert finals[3] == {"state": "error", "msg": "this agent has no handler for task type 'nope'"}
    assert finals[4]["state"] == "error" and "JSON" in json.dumps(finals[4])
    assert finals[5] == {"state": "cancelled"}
    assert finals[6] == {
        "state": "error",
        "msg": "the result is 1048579 bytes of JSON; at most 1048576",
    }
    assert finals[7] == {
        "state": "error",
        "msg": "this output report is over 2096128 bytes of JSON",
    }
