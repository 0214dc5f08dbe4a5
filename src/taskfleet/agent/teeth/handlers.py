"""The teeth commands as handlers (`async def run(task, report) -> JSONValue`), by the
method names teeth-agent's code uses, and by the seed's `standbye.` spellings too."""

from __future__ import annotations

import time

from taskfleet import __version__
from taskfleet.agent.handlers import Handler, Reporter, TaskContext
from taskfleet.agent.teeth import wire
from taskfleet.agent.teeth.config import TeethConfig
from taskfleet.agent.teeth.decom import Decom
from taskfleet.agent.teeth.images import ImageCache
from taskfleet.agent.teeth.standby import Standby
from taskfleet.core.models import JSONValue


class Status:
    """`status`: what teeth-agent answered (mode, uptime, version), and the cache."""

    def __init__(self, images: ImageCache) -> None:
        self._images = images
        self._started = time.monotonic()

    async def run(self, task: TaskContext, report: Reporter) -> JSONValue:
        return {
            "mode": "STANDBY",
            "uptime": round(time.monotonic() - self._started, 3),
            "version": __version__,
            "cached_images": sorted(self._images.cached()),
            "prepared_image": self._images.prepared(),
        }


def handlers(config: TeethConfig) -> dict[str, Handler]:
    standby, decom = Standby(config), Decom(config)
    found: dict[str, Handler] = {
        "status": Status(standby.images).run,
        "standby.cache_images": standby.cache_images,
        "standby.prepare_image": standby.prepare_image,
        "standby.run_image": standby.run_image,
        "decom.disk_erase": decom.disk_erase,
        "decom.firmware_secure": decom.firmware_secure,
        "decom.qc": decom.qc,
    }
    for seed_name, name in wire.SEED_SPELLINGS.items():
        found[seed_name] = found[name]
    assert set(found) == set(wire.TASK_TYPES)
    return found
