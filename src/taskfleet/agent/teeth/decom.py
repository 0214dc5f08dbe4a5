"""The `decom.*` commands: quality control, disk erase, firmware.

`disk_erase` and `firmware_secure` touch only the devices the agent's config names
(`erase_devices`, `firmware_commands`), exactly as written there, and refuse any other
with an error that lists what is allowed. An erase overwrites the whole device (a block
device or a file standing in for one) with zeros, flushes it, then reads it back to check
that nothing else is left. `qc` reports the machine's CPUs, memory, disks, interfaces and
chassis from /proc and /sys, and fails when given `expected` values it does not meet.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from taskfleet.agent.handlers import HandlerError, Reporter, TaskContext
from taskfleet.agent.teeth import hardware
from taskfleet.agent.teeth.config import TeethConfig
from taskfleet.agent.teeth.standby import params, run_command
from taskfleet.core.models import JSONValue

CHUNK_BYTES = 4 * 1024 * 1024
ZEROS = bytes(CHUNK_BYTES)
#: `expected` values `decom.qc` checks, and how.
EXPECTATIONS = ("cpu_count", "memory_bytes_min", "disk_count_min")

Progress = Callable[[float], Awaitable[None]]  #: fraction done, 0-1


def chosen(task: TaskContext, allowed: Sequence[str], setting: str) -> list[str]:
    """The devices a command names (all the allowed ones when it names none). Raises
    `HandlerError` for a device the config does not name."""
    if not allowed:
        raise HandlerError(f"this agent's teeth config has no {setting}: it touches no device")
    wanted = params(task).get("devices")
    if wanted is None:
        return list(allowed)
    if not isinstance(wanted, list) or not all(isinstance(d, str) for d in wanted):
        raise HandlerError('"devices" must be a list of device paths')
    refused = [d for d in wanted if d not in allowed]
    if refused:
        raise HandlerError(
            f"refusing {', '.join(refused)}: this agent's {setting} allow only {', '.join(allowed)}"
        )
    return wanted


def _pwrite_zeros(fd: int, offset: int, size: int) -> None:
    view = memoryview(ZEROS)[:size]
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _first_data(fd: int, offset: int, size: int) -> int | None:
    """The offset of the first non-zero byte in the range, or None."""
    chunk = os.pread(fd, size, offset)
    rest = chunk.lstrip(b"\x00")
    if len(chunk) < size:
        return offset + len(chunk)  # shorter than it was: count it as not erased
    return offset + len(chunk) - len(rest) if rest else None


async def erase(device: Path, progress: Progress) -> dict[str, Any]:
    """Zeroes the device (or file) and checks it. Raises `HandlerError`."""
    try:
        mode = device.stat().st_mode
    except OSError as exc:
        raise HandlerError(f"cannot erase {device}: {exc.strerror}") from exc
    if not (stat.S_ISBLK(mode) or stat.S_ISREG(mode)):
        raise HandlerError(f"refusing to erase {device}: neither a block device nor a file")
    if str(device) in hardware.mounted():
        raise HandlerError(f"refusing to erase {device}: it is mounted")
    fd = os.open(device, os.O_RDWR)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        for offset in range(0, size, CHUNK_BYTES):
            await asyncio.to_thread(_pwrite_zeros, fd, offset, min(CHUNK_BYTES, size - offset))
            await progress(0.5 * min(offset + CHUNK_BYTES, size) / size)
        await asyncio.to_thread(os.fsync, fd)
        for offset in range(0, size, CHUNK_BYTES):
            found = await asyncio.to_thread(
                _first_data, fd, offset, min(CHUNK_BYTES, size - offset)
            )
            if found is not None:
                raise HandlerError(f"{device} still holds data at byte {found} after the erase")
            await progress(0.5 + 0.5 * min(offset + CHUNK_BYTES, size) / size)
    finally:
        os.close(fd)
    return {"device": str(device), "bytes": size, "verified": True}


def qc_problems(facts: dict[str, Any], expected: object) -> list[str]:
    """What the machine lacks of the `expected` values (none when nothing is expected)."""
    if expected is None:
        return []
    if not isinstance(expected, dict) or set(expected) - set(EXPECTATIONS):
        raise HandlerError(f'"expected" may hold {", ".join(EXPECTATIONS)} (numbers)')
    have = {
        "cpu_count": facts["cpu"]["count"],
        "memory_bytes_min": facts["memory"]["total_bytes"] or 0,
        "disk_count_min": len(facts["disks"]),
    }
    problems = []
    for key, wanted in expected.items():
        exact = key == "cpu_count"
        if (have[key] != wanted) if exact else (have[key] < wanted):
            problems.append(f"{key.removesuffix('_min')} is {have[key]}, expected {wanted}")
    return problems


class Decom:
    def __init__(self, config: TeethConfig) -> None:
        self.config = config

    async def qc(self, task: TaskContext, report: Reporter) -> JSONValue:
        facts = await asyncio.to_thread(hardware.facts)
        problems = qc_problems(facts, params(task).get("expected"))
        if problems:
            raise HandlerError("quality control failed: " + "; ".join(problems))
        return facts

    async def disk_erase(self, task: TaskContext, report: Reporter) -> JSONValue:
        devices = chosen(task, self.config.erase_devices, "erase_devices")
        erased = []
        for n, device in enumerate(devices):

            async def progress(done: float, n: int = n, device: str = device) -> None:
                percent = 100 * (n + done) / len(devices)
                await report.progress(percent, activity=f"erasing {device}")

            erased.append(await erase(Path(device), progress))
            await report.log(f"erased {device} ({erased[-1]['bytes']} bytes), verified\n")
        return {"erased": erased}

    async def firmware_secure(self, task: TaskContext, report: Reporter) -> JSONValue:
        commands = self.config.firmware_commands
        secured = []
        for device in chosen(task, tuple(commands), "firmware_commands"):
            argv = commands[device]
            await report.progress(activity=f"{argv[0]} for {device}")
            code, output = await run_command(argv)
            await report.log(output)
            if code != 0:
                raise HandlerError(f"{argv[0]} for {device} exited with {code}")
            secured.append({"device": device, "command": list(argv), "exit_code": code})
        return {"secured": secured}
