"""The agent in teeth mode: its handlers on real files, a real HTTP image source and the
real /proc and /sys, and then `taskfleet agent run --protocol teeth` as a process against a
real server's teeth listener, driven through the native API."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.server
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskfleet.agent.handlers import HandlerError, TaskContext
from taskfleet.agent.teeth import config as teeth_config
from taskfleet.agent.teeth import hardware
from taskfleet.agent.teeth.config import TeethConfig
from taskfleet.agent.teeth.handlers import handlers
from taskfleet.agent.transports.teeth import address
from taskfleet.core.models import JSONValue
from tests.api.conftest import (  # noqa: F401  (the in-process live server)
    Live,
    eventually,
    sqlite_template,
    start_server,
)

TEETH_ID = "aa:bb:cc:dd:ee:01"
AGENT = "aa-bb-cc-dd-ee-01"


class Recorder:
    """A reporter that keeps what it is told."""

    def __init__(self) -> None:
        self.percents: list[float | None] = []
        self.logs: list[str] = []

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


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def image_source(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server in a thread serving a folder: (its URL, the folder)."""
    folder = tmp_path / "source"
    folder.mkdir()
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serve = functools.partial(server.serve_forever, poll_interval=0.01)  # a quick shutdown
    thread = threading.Thread(target=serve, name="image-source", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def publish(folder: Path, image_id: str, size: int, checksum: str | None = None) -> bytes:
    """An image of `size` random bytes and its `.sha256` (the right one unless given)."""
    data = os.urandom(size)
    (folder / image_id).write_bytes(data)
    digest = checksum or hashlib.sha256(data).hexdigest()
    (folder / f"{image_id}.sha256").write_text(f"{digest}  {image_id}\n")
    return data


def task(task_type: str, **params: Any) -> TaskContext:
    payload = {"task_id": "1.1", **params}
    return TaskContext(id=1, attempt=1, type=task_type, payload=payload, agent="t")


async def run(config: TeethConfig, task_type: str, **params: Any) -> Any:
    return await handlers(config)[task_type](task(task_type, **params), Recorder())


def cache_config(tmp_path: Path, url: str, capacity: int) -> TeethConfig:
    return TeethConfig(
        image_source=url,
        cache_dir=tmp_path / "cache",
        cache_capacity_bytes=capacity,
        config_drive_dir=tmp_path / "configdrive",
    )


# -- standby ----------------------------------------------------------------------------------


async def test_images_are_cached_in_priority_order_within_the_capacity(
    tmp_path: Path, image_source: tuple[str, Path]
) -> None:
    url, folder = image_source
    images = {i: publish(folder, i, size) for i, size in [("a", 300), ("b", 600), ("c", 200)]}
    config = cache_config(tmp_path, url, capacity=600)
    result = await run(config, "standby.cache_images", image_ids=["a", "b", "c"])
    assert result == {"cached": ["a", "c"], "skipped": ["b"], "evicted": [], "bytes": 500}
    for image_id in ("a", "c"):
        assert (config.cache_dir / image_id / "image").read_bytes() == images[image_id]
    assert not (config.cache_dir / "b").exists()

    result = await run(config, "standbye.cache_images", image_ids=["b", "c"])  # seed spelling
    assert result == {"cached": ["b"], "skipped": ["c"], "evicted": ["a", "c"], "bytes": 600}
    assert sorted(p.name for p in config.cache_dir.iterdir()) == ["b"]


async def test_an_image_whose_checksum_does_not_match_is_not_cached(
    tmp_path: Path, image_source: tuple[str, Path]
) -> None:
    url, folder = image_source
    publish(folder, "good", 100)
    publish(folder, "bad", 100, checksum="0" * 64)
    config = cache_config(tmp_path, url, capacity=10_000)
    with pytest.raises(HandlerError, match="bad: bad: checksum mismatch"):
        await run(config, "standby.cache_images", image_ids=["bad", "missing", "good"])
    assert sorted(p.name for p in config.cache_dir.iterdir()) == ["good"]  # no partial files
    with pytest.raises(HandlerError, match="invalid image id"):
        await run(config, "standby.cache_images", image_ids=["../etc"])


async def test_prepare_then_run_writes_the_config_drive_and_does_not_boot(
    tmp_path: Path, image_source: tuple[str, Path]
) -> None:
    url, folder = image_source
    publish(folder, "img", 1000)
    config = cache_config(tmp_path, url, capacity=10_000)
    with pytest.raises(HandlerError, match="not cached: prepare it first"):
        await run(config, "standby.run_image", image_id="img")
    prepared = await run(config, "standby.prepare_image", image_id="img")
    assert prepared["sha256"] == hashlib.sha256((folder / "img").read_bytes()).hexdigest()
    drive = {"openstack/latest/meta_data.json": {"uuid": "u-1"}, "user_data": "#!/bin/sh\n"}
    result = await run(config, "standby.run_image", image_id="img", config_drive=drive)
    assert result["boot"] == "none" and "allows neither" in result["reason"]
    assert result["files"] == sorted(drive)
    root = config.config_drive_dir
    assert (root / "user_data").read_text() == "#!/bin/sh\n"
    assert '"uuid": "u-1"' in (root / "openstack/latest/meta_data.json").read_text()
    status = await run(config, "status")
    assert status["mode"] == "STANDBY" and status["prepared_image"] == "img"
    with pytest.raises(HandlerError, match="invalid config drive file name"):
        await run(config, "standby.run_image", image_id="img", config_drive={"../x": "y"})


async def test_run_boots_only_as_the_config_allows(
    tmp_path: Path, image_source: tuple[str, Path]
) -> None:
    url, folder = image_source
    publish(folder, "img", 10)
    allowed = replace(
        cache_config(tmp_path, url, capacity=10_000),
        allow_kexec=True,
        kexec_command=("false",),  # no viable kexec target: reboot instead
        allow_reboot=True,
        reboot_command=("true",),
    )
    await run(allowed, "standby.prepare_image", image_id="img")
    result = await run(allowed, "standby.run_image", image_id="img")
    assert result["boot"] == "reboot" and result["command"] == ["true"]


# -- decom ------------------------------------------------------------------------------------


def device(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


async def test_disk_erase_zeroes_the_listed_devices_and_refuses_any_other(tmp_path: Path) -> None:
    disk = device(tmp_path, "disk0.img", 5 * 1024 * 1024 + 123)  # more than one chunk
    other = device(tmp_path, "disk1.img", 4096)
    before = other.read_bytes()
    with pytest.raises(HandlerError, match="has no erase_devices: it touches no device"):
        await run(TeethConfig(), "decom.disk_erase")
    config = TeethConfig(erase_devices=(str(disk),))
    with pytest.raises(HandlerError, match=f"refusing {other}: .* allow only {disk}"):
        await run(config, "decom.disk_erase", devices=[str(disk), str(other)])
    assert other.read_bytes() == before and disk.read_bytes() != bytes(disk.stat().st_size)
    result = await run(config, "decom.disk_erase")
    assert result == {"erased": [{"device": str(disk), "bytes": 5 * 1024 * 1024 + 123,
                                  "verified": True}]}  # fmt: skip
    assert disk.read_bytes() == bytes(5 * 1024 * 1024 + 123)
    assert other.read_bytes() == before


async def test_firmware_secure_runs_the_configured_command_only(tmp_path: Path) -> None:
    config = TeethConfig(
        firmware_commands={"/dev/fake0": ("sh", "-c", "echo frozen"), "/dev/fake1": ("false",)}
    )
    report = Recorder()
    result = await handlers(config)["decom.firmware_secure"](
        task("decom.firmware_secure", devices=["/dev/fake0"]), report
    )
    assert result == {"secured": [{"device": "/dev/fake0", "command": ["sh", "-c", "echo frozen"],
                                   "exit_code": 0}]}  # fmt: skip
    assert report.logs == ["frozen\n"]
    with pytest.raises(HandlerError, match="false for /dev/fake1 exited with 1"):
        await run(config, "decom.firmware_secure", devices=["/dev/fake1"])
    with pytest.raises(HandlerError, match="refusing /dev/sda"):
        await run(config, "decom.firmware_secure", devices=["/dev/sda"])


async def test_qc_reports_the_real_hardware() -> None:
    facts = await run(TeethConfig(), "decom.qc")
    assert facts["cpu"]["count"] == os.cpu_count()
    page, pages = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES")
    assert facts["memory"]["total_bytes"] == page * pages
    disks = {p.name for p in Path("/sys/block").iterdir() if not p.name.startswith(("loop", "ram"))}
    assert {d["name"] for d in facts["disks"]} == {d for d in disks if not d.startswith("zram")}
    expected = {"cpu_count": facts["cpu"]["count"] + 1}
    with pytest.raises(HandlerError, match="quality control failed: cpu_count is"):
        await run(TeethConfig(), "decom.qc", expected=expected)


def test_the_config_file_and_the_server_address(tmp_path: Path) -> None:
    file = tmp_path / "teeth.toml"
    file.write_text(
        'image_source = "http://images:8000/i"\ncache_capacity_bytes = 1e9\n'
        'erase_devices = ["/dev/sdb"]\n[firmware_commands]\n"/dev/sdb" = ["hdparm", "-I"]\n'
    )
    loaded = teeth_config.load(file)
    assert loaded.cache_capacity_bytes == 10**9 and loaded.erase_devices == ("/dev/sdb",)
    assert loaded.firmware_commands == {"/dev/sdb": ("hdparm", "-I")} and not loaded.allow_reboot
    file.write_text("allow_rebooot = true\n")
    with pytest.raises(ValueError, match="unknown setting 'allow_rebooot'"):
        teeth_config.load(file)
    assert address("overlord:8081") == ("overlord", 8081, False)
    assert address("tls://[::1]:8081") == ("::1", 8081, True)
    with pytest.raises(ValueError, match="HOST:PORT"):
        address("http://overlord:8081")
    assert hardware.primary_mac() in {n["mac"] for n in hardware.interfaces()} | {None}


# -- the agent process against a server ----------------------------------------------------


@pytest.fixture
async def teeth_agent(
    tmp_path: Path,
    start_server: Any,  # noqa: F811  (the in-process one, not tests/agent's)
    image_source: tuple[str, Path],
) -> AsyncIterator[tuple[Live, httpx.AsyncClient, Path]]:
    """A server with its teeth listener, and `taskfleet agent run --protocol teeth`
    connected to it: (the server, an admin client, the agent's config file)."""
    url, _ = image_source
    live: Live = await start_server(teeth_enabled=True, teeth_port=0)
    admin = await live.admin()
    await admin.put("/api/v1/registration", json={"policy": "open"})
    disk = device(tmp_path, "disk0.img", 1024 * 1024)
    config = tmp_path / "teeth.toml"
    config.write_text(
        f'image_source = "{url}"\ncache_dir = "{tmp_path / "cache"}"\n'
        f'cache_capacity_bytes = 1000\nerase_devices = ["{disk}"]\nping_interval = 0.5\n'
    )
    log = tmp_path / "agent.log"
    argv = ["-m", "taskfleet.agent", "run", "--protocol", "teeth"]
    argv += ["--server", f"127.0.0.1:{live.app.state.teeth.port}", "--name", TEETH_ID]
    argv += ["--teeth-config", str(config), "--spool", str(tmp_path / "agent.spool")]
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        await eventually(lambda: _online(admin), timeout=30)
        yield live, admin, disk
        process.terminate()
        async with asyncio.timeout(20):
            assert await process.wait() == 0, log.read_text()
    except BaseException:
        sys.stderr.write(f"\n----- agent log -----\n{log.read_text()[-20_000:]}")
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _online(admin: httpx.AsyncClient) -> bool:
    response = await admin.get(f"/api/v1/agents/{AGENT}")
    return response.status_code == 200 and bool(response.json()["online"])


async def finished(admin: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """Submits a task for the teeth agent and waits for its end (through the API)."""
    response = await admin.post("/api/v1/tasks", json={**body, "agent": AGENT})
    assert response.status_code == 201, response.text
    task_id = response.json()[0]["id"]

    async def done() -> dict[str, Any] | None:
        task: dict[str, Any] = (await admin.get(f"/api/v1/tasks/{task_id}")).json()
        return task if task["status"] in ("completed", "failed", "cancelled") else None

    return await eventually(done, timeout=30)


async def test_the_agent_in_teeth_mode_caches_images_and_erases_a_disk(
    teeth_agent: tuple[Live, httpx.AsyncClient, Path], image_source: tuple[str, Path]
) -> None:
    _, admin, disk = teeth_agent
    _, folder = image_source
    publish(folder, "img-1", 400)
    publish(folder, "img-2", 700)  # does not fit next to img-1 in 1000 bytes
    publish(folder, "img-3", 500)

    status = await finished(admin, {"type": "status"})
    assert status["status"] == "completed" and status["result"]["mode"] == "STANDBY"

    body = {"type": "standby.cache_images", "payload": {"image_ids": ["img-1", "img-2", "img-3"]}}
    cached = await finished(admin, body)
    assert cached["status"] == "completed", cached
    assert cached["result"] == {
        "cached": ["img-1", "img-3"],
        "skipped": ["img-2"],
        "evicted": [],
        "bytes": 900,
    }
    logs = await admin.get(f"/api/v1/tasks/{cached['id']}/logs")
    text = "".join(c["text"] for c in logs.json())
    assert f"sent standby.cache_images as {cached['id']}.1" in text and "accepted: null" in text

    erased = await finished(admin, {"type": "decom.disk_erase"})
    assert erased["status"] == "completed", erased
    assert erased["result"]["erased"][0]["verified"] is True
    assert disk.read_bytes() == bytes(1024 * 1024)

    refused = await finished(
        admin, {"type": "decom.disk_erase", "payload": {"devices": ["/dev/sda"]}}
    )
    assert refused["status"] == "failed"
    assert refused["error"].startswith("refusing /dev/sda: this agent's erase_devices allow only")

    events = (await admin.get(f"/api/v1/agents/{AGENT}/events")).json()
    assert any("erased" in str(e["data"].get("message")) for e in events)
