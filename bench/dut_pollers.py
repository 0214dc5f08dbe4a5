"""1,000 dutserver agents long-polling one taskfleet server at once.

Prints the errors seen (there must be none), the server's memory per waiting poller, and
how long it took to hand one task to every poller. Run: `python bench/dut_pollers.py [N]`.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import argon2
import httpx

from taskfleet.core.accounts import AccountService
from taskfleet.core.models import Role
from taskfleet.core.ports import SystemClock
from taskfleet.store.sql import open_store

POLL_SECONDS = 55  # long enough for every poller to get its task
SUBMITTERS = 16


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def make_accounts(db: str, count: int) -> None:
    store = await open_store(db)
    # Cheap hashes: the bench measures polling, not argon2.
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    accounts = AccountService(store, SystemClock(), hasher=hasher)
    await accounts.add("admin", Role.ADMIN, "pw")
    for i in range(count):
        await accounts.add(f"dut{i}", Role.AGENT, "pw")
    await store.close()


async def wait_up(base: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                await client.get(f"{base}/api/v1/openapi.json")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise RuntimeError("server did not start")


async def poll(client: httpx.AsyncClient, i: int, errors: list[str]) -> bool:
    try:
        response = await client.get("/tasks", headers={"Authorization": f"dut{i}:pw"})
        body = response.json()
        if response.status_code != 200 or body.get("error"):
            errors.append(f"dut{i}: {response.status_code} {response.text[:100]}")
            return False
        return bool(body["events"])
    except (httpx.HTTPError, ValueError) as exc:
        errors.append(f"dut{i}: {type(exc).__name__}: {exc}")
        return False


async def submit(client: httpx.AsyncClient, token: str, agents: range, errors: list[str]) -> None:
    for i in agents:
        response = await client.post(
            "/tasks",
            params={"target": f"dut{i}", "noWait": "1"},
            headers={"Authorization": token},
            json={"n": i},
        )
        if response.status_code != 200:
            errors.append(f"submit dut{i}: {response.status_code}")


async def run(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * count + 1024)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        await make_accounts(db, count)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "TASKFLEET_DUT_POLL_SECONDS": str(POLL_SECONDS),
            "TASKFLEET_LOG_LEVEL": "warning",
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from taskfleet.cli import main; main()",
                "server",
                "--db",
                db,
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            await wait_up(base)
            await measure(base, server.pid, count)
        finally:
            server.terminate()
            server.wait(30)


async def measure(base: str, pid: int, count: int) -> None:
    errors: list[str] = []
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        # Warm-up round: every agent authenticates once (the server caches verified logins).
        await asyncio.gather(
            *(
                client.post("/events", headers={"Authorization": f"dut{i}:pw"}, json={"hello": i})
                for i in range(count)
            )
        )
        idle = rss_kib(pid)
        polls = [asyncio.create_task(poll(client, i, errors)) for i in range(count)]
        await asyncio.sleep(3)  # let every poll reach the server and park
        parked = rss_kib(pid)
        token = (await client.get("/login", params={"user": "admin", "pass": "pw"})).json()["token"]
        started, cpu_before = time.monotonic(), cpu_seconds(pid)
        # Submit on a client of its own: httpx's pool is slow to hand out a connection when a
        # thousand requests are in flight on it, which would measure the client, not us.
        async with httpx.AsyncClient(base_url=base, timeout=60) as submitter:
            await asyncio.gather(
                *(
                    submit(submitter, token, range(k, count, SUBMITTERS), errors)
                    for k in range(SUBMITTERS)
                )
            )
        submitted = time.monotonic() - started
        delivered = sum(await asyncio.gather(*polls))
        elapsed = time.monotonic() - started
        server_cpu = cpu_seconds(pid) - cpu_before
    print(f"pollers:               {count}")
    print(f"errors:                {len(errors)}")
    for line in errors[:10]:
        print(f"  {line}")
    print(f"server RSS idle:       {idle / 1024:.1f} MiB")
    print(f"server RSS parked:     {parked / 1024:.1f} MiB")
    print(f"memory per poller:     {(parked - idle) / count:.1f} KiB")
    print(f"submitted in:          {submitted:.2f} s")
    print(f"server CPU meanwhile:  {server_cpu:.2f} s ({server_cpu / count * 1000:.2f} ms a task)")
    print(
        f"tasks delivered:       {delivered} of {count} in {elapsed:.2f} s "
        f"({SUBMITTERS} concurrent submitters; each task woke its own poller)"
    )


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
