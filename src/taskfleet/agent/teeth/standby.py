"""The `standby.*` commands: cache images, prepare one, run it.

`run_image` writes the config drive it is given (`config_drive`: relative file name ->
content; a string is written as it is, anything else as JSON) into the configured folder,
then kexecs or reboots only when the agent's config allows it; by default it does neither
and says so in its result.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from taskfleet.agent.handlers import HandlerError, Reporter, TaskContext
from taskfleet.agent.teeth.config import TeethConfig
from taskfleet.agent.teeth.images import TIMEOUT, ImageCache, ImageError, NoRoom, check_id
from taskfleet.core.models import JSONValue

MAX_OUTPUT_CHARS = 10_000


def params(task: TaskContext) -> dict[str, Any]:
    """The command's params (the task's payload)."""
    return task.payload if isinstance(task.payload, dict) else {}


def drive_path(root: Path, name: object) -> Path:
    """Where a config drive file goes; refuses names that would leave the folder."""
    relative = PurePosixPath(name) if isinstance(name, str) and name else None
    if relative is None or relative.is_absolute() or {"..", "."} & set(relative.parts):
        raise HandlerError(f"invalid config drive file name {name!r}: use a relative path")
    return root.joinpath(*relative.parts)


def write_config_drive(root: Path, files: object) -> list[str]:
    """Replaces the folder's content with the files; returns their names."""
    if not isinstance(files, dict):
        raise HandlerError('"config_drive" must be an object of file name -> content')
    targets = {name: drive_path(root, name) for name in files}
    shutil.rmtree(root, ignore_errors=True)
    for name, target in targets.items():
        content = files[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    root.mkdir(parents=True, exist_ok=True)
    return sorted(targets)


async def run_command(argv: tuple[str, ...]) -> tuple[int, str]:
    """Runs a command; returns its exit code and output. Raises `HandlerError`."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as exc:
        raise HandlerError(f"cannot run {argv[0]}: {exc}") from exc
    try:
        output, _ = await process.communicate()
    except asyncio.CancelledError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")[-MAX_OUTPUT_CHARS:]


class Standby:
    def __init__(self, config: TeethConfig) -> None:
        self.config = config
        self.images = ImageCache(config.cache_dir, config.cache_capacity_bytes, config.image_source)

    async def cache_images(self, task: TaskContext, report: Reporter) -> JSONValue:
        image_ids = params(task).get("image_ids")
        if not isinstance(image_ids, list):
            raise HandlerError('"image_ids" must be a list of image ids, most wanted first')
        return await self.images.cache(image_ids, report)

    async def prepare_image(self, task: TaskContext, report: Reporter) -> JSONValue:
        """Makes sure the image is cached and intact, and marks it as the one to run."""
        image_id = check_id(params(task).get("image_id"))
        if image_id not in self.images.cached():
            await report.progress(0, activity=f"downloading {image_id}")
            await self._fetch(image_id)
        await report.progress(50, activity=f"verifying {image_id}")
        found = await self.images.verify(image_id)
        self.images.mark_prepared(image_id)
        return {"image_id": image_id, "path": str(found.path), "sha256": found.sha256}

    async def _fetch(self, image_id: str) -> None:
        others = sum(c.size for c in self.images.cached().values())
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                await self.images.fetch(client, image_id, self.images.capacity - others)
        except NoRoom:
            raise ImageError(
                f"image {image_id} does not fit in the cache next to the images it holds"
            ) from None

    async def run_image(self, task: TaskContext, report: Reporter) -> JSONValue:
        """Writes the config drive, then boots the image only if the config allows it."""
        image_id = check_id(params(task).get("image_id"))
        if image_id not in self.images.cached():
            raise HandlerError(f"image {image_id} is not cached: prepare it first")
        root = self.config.config_drive_dir
        files = write_config_drive(root, params(task).get("config_drive", {}))
        await report.log(f"wrote {len(files)} config drive files to {root}\n")
        return {
            "image_id": image_id,
            "config_drive": str(root),
            "files": files,
            **await self._boot(),
        }

    async def _boot(self) -> dict[str, Any]:
        """kexec when allowed, else (or when kexec fails) reboot when allowed."""
        config = self.config
        failures = []
        for allowed, how, argv in (
            (config.allow_kexec, "kexec", config.kexec_command),
            (config.allow_reboot, "reboot", config.reboot_command),
        ):
            if not allowed:
                continue
            code, output = await run_command(argv)
            if code == 0:
                return {"boot": how, "command": list(argv)}
            failures.append(f"{how} failed ({argv[0]} exited with {code}): {output.strip()}")
        if failures:
            raise HandlerError("; ".join(failures))
        return {"boot": "none", "reason": "the agent's config allows neither kexec nor reboot"}
