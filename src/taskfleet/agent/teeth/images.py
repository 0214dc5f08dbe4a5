"""The agent's image cache: images downloaded by id from an HTTP source, verified against
the source's SHA-256, kept in priority order within a byte capacity.

The source serves `<source>/<id>` and, next to it, `<source>/<id>.sha256` (the hex digest,
optionally followed by a file name, as `sha256sum` prints it). An image is cached only
once its digest matches; each lives in `<cache_dir>/<id>/` as `image` and `sha256`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from taskfleet.agent.handlers import HandlerError, Reporter

IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
CHUNK_BYTES = 1024 * 1024
TIMEOUT = httpx.Timeout(30.0, read=300.0)  #: seconds; a slow mirror may pause long
PREPARED = ".prepared"  #: the file in the cache naming the prepared image (no id starts with ".")


class ImageError(HandlerError):
    """An image that cannot be cached: no source, a download error, a wrong checksum."""


class NoRoom(Exception):
    """The image does not fit in what is left of the cache's capacity."""


@dataclass(frozen=True, slots=True)
class Cached:
    image_id: str
    size: int
    sha256: str
    path: Path


def check_id(image_id: object) -> str:
    if not isinstance(image_id, str) or not IMAGE_ID.match(image_id):
        raise HandlerError(f"invalid image id {image_id!r}: letters, digits, '.', '_', '-'")
    return image_id


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class ImageCache:
    def __init__(self, root: Path, capacity: int, source: str) -> None:
        self.root = root
        self.capacity = capacity
        self.source = source.rstrip("/")

    def cached(self) -> dict[str, Cached]:
        """The images on disk with their recorded digest."""
        found: dict[str, Cached] = {}
        for folder in sorted(self.root.glob("*/")) if self.root.exists() else ():
            image, digest = folder / "image", folder / "sha256"
            if IMAGE_ID.match(folder.name) and image.is_file() and digest.is_file():
                size = image.stat().st_size
                found[folder.name] = Cached(folder.name, size, digest.read_text().strip(), image)
        return found

    def evict(self, keep: set[str]) -> list[str]:
        """Removes every cached image not in `keep`; returns their ids."""
        gone = sorted(set(self.cached()) - keep)
        for image_id in gone:
            shutil.rmtree(self.root / image_id, ignore_errors=True)
        return gone

    async def cache(self, image_ids: list[str], report: Reporter) -> dict[str, Any]:
        """Caches the images in priority order: each that fits in what the ones before it
        left of the capacity is kept or downloaded, the others are skipped, and images
        not asked for are evicted. Raises `ImageError` when some could not be cached."""
        wanted = list(dict.fromkeys(check_id(i) for i in image_ids))
        unwanted = self.evict(set(wanted))  # first, so that downloads have the room
        have = self.cached()
        kept: list[str] = []
        skipped: list[str] = []
        failed: list[str] = []
        used = 0
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            for n, image_id in enumerate(wanted):
                await report.progress(100 * n / len(wanted), activity=f"caching {image_id}")
                try:
                    size = await self._size_or_fetch(client, have, image_id, self.capacity - used)
                except NoRoom:
                    skipped.append(image_id)
                    continue
                except ImageError as exc:
                    await report.log(f"{exc}\n")
                    failed.append(f"{image_id}: {exc}")
                    continue
                kept.append(image_id)
                used += size
        evicted = sorted(unwanted + self.evict(set(kept)))
        if failed:
            raise ImageError("could not cache " + "; ".join(failed))
        return {"cached": kept, "skipped": skipped, "evicted": evicted, "bytes": used}

    async def _size_or_fetch(
        self, client: httpx.AsyncClient, have: dict[str, Cached], image_id: str, budget: int
    ) -> int:
        if image_id in have:
            if have[image_id].size > budget:
                raise NoRoom(image_id)
            return have[image_id].size
        return (await self.fetch(client, image_id, budget)).size

    async def fetch(self, client: httpx.AsyncClient, image_id: str, budget: int) -> Cached:
        """Downloads and verifies one image into the cache. Raises `ImageError`, or
        `NoRoom` once it turns out bigger than `budget` bytes."""
        if not self.source:
            raise ImageError("this agent has no image_source in its teeth config")
        url = f"{self.source}/{quote(check_id(image_id))}"
        expected = await self._checksum(client, url)
        self.root.mkdir(parents=True, exist_ok=True)
        part = self.root / f".{image_id}.part"
        try:
            actual = await self._download(client, url, part, budget)
            if actual != expected:
                raise ImageError(f"{image_id}: checksum mismatch (sha256 {actual}, not {expected})")
            return self._install(image_id, part, actual)
        finally:
            part.unlink(missing_ok=True)

    async def _checksum(self, client: httpx.AsyncClient, url: str) -> str:
        try:
            response = await client.get(url + ".sha256")
        except httpx.HTTPError as exc:
            raise ImageError(f"{url}.sha256: {exc}") from exc
        text = response.text.split()[0].lower() if response.text.split() else ""
        if response.status_code != 200 or not SHA256_HEX.match(text):
            raise ImageError(f"no SHA-256 checksum at {url}.sha256 (HTTP {response.status_code})")
        return text

    async def _download(self, client: httpx.AsyncClient, url: str, part: Path, budget: int) -> str:
        digest, size = hashlib.sha256(), 0
        try:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ImageError(f"{url}: HTTP {response.status_code}")
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) > budget:
                    raise NoRoom(url)
                with part.open("wb") as out:
                    async for chunk in response.aiter_bytes(CHUNK_BYTES):
                        size += len(chunk)
                        if size > budget:
                            raise NoRoom(url)
                        digest.update(chunk)
                        out.write(chunk)
                    await asyncio.to_thread(os.fsync, out.fileno())
        except httpx.HTTPError as exc:
            raise ImageError(f"{url}: {exc}") from exc
        return digest.hexdigest()

    def _install(self, image_id: str, part: Path, sha256: str) -> Cached:
        folder = self.root / image_id
        folder.mkdir(exist_ok=True)
        os.replace(part, folder / "image")
        (folder / "sha256").write_text(sha256 + "\n")
        return Cached(image_id, (folder / "image").stat().st_size, sha256, folder / "image")

    async def verify(self, image_id: str) -> Cached:
        """Hashes a cached image again; a damaged one is removed. Raises `ImageError`."""
        found = self.cached().get(check_id(image_id))
        if found is None:
            raise ImageError(f"image {image_id} is not cached")
        actual = await asyncio.to_thread(_sha256_file, found.path)
        if actual != found.sha256:
            shutil.rmtree(self.root / image_id, ignore_errors=True)
            raise ImageError(f"cached image {image_id} is damaged (sha256 {actual}); removed it")
        return found

    def prepared(self) -> str | None:
        marker = self.root / PREPARED
        return marker.read_text().strip() if marker.is_file() else None

    def mark_prepared(self, image_id: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / PREPARED).write_text(image_id + "\n")
