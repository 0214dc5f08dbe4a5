"""What the machine is made of, read from /proc and /sys (Linux): for `decom.qc`, and for
the primary MAC address that names a teeth agent."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

ROOT = Path("/")
SECTOR_BYTES = 512  #: /sys/block/*/size counts 512-byte sectors, whatever the device's
#: Block devices that are not disks: loop files, RAM disks, compressed swap.
NOT_DISKS = ("loop", "ram", "zram")
CHASSIS_FIELDS = ("sys_vendor", "product_name", "product_version", "board_vendor", "board_name")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def cpu(root: Path = ROOT) -> dict[str, Any]:
    lines = _read(root / "proc/cpuinfo").splitlines()
    count = sum(1 for line in lines if line.split(":")[0].strip() == "processor")
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return {"count": count, "model": models[0] if models else "", "arch": platform.machine()}


def memory(root: Path = ROOT) -> dict[str, Any]:
    for line in _read(root / "proc/meminfo").splitlines():
        key, _, value = line.partition(":")
        if key == "MemTotal":
            kib = value.split()[0]
            return {"total_bytes": int(kib) * 1024 if kib.isdigit() else None}
    return {"total_bytes": None}


def disks(root: Path = ROOT) -> list[dict[str, Any]]:
    found = []
    for device in sorted((root / "sys/block").glob("*")):
        if device.name.startswith(NOT_DISKS):
            continue
        sectors = _read(device / "size")
        found.append(
            {
                "name": device.name,
                "size_bytes": int(sectors) * SECTOR_BYTES if sectors.isdigit() else None,
                "rotational": _read(device / "queue/rotational") == "1",
                "removable": _read(device / "removable") == "1",
                "model": _read(device / "device/model"),
            }
        )
    return found


def interfaces(root: Path = ROOT) -> list[dict[str, Any]]:
    found = []
    for nic in sorted((root / "sys/class/net").glob("*")):
        mac = _read(nic / "address")
        if nic.name != "lo" and mac and mac != "00:00:00:00:00:00":
            found.append({"name": nic.name, "mac": mac, "physical": (nic / "device").exists()})
    return found


def primary_mac(root: Path = ROOT) -> str | None:
    """The first physical interface's MAC address (else any's): teeth-agent's identity."""
    nics = interfaces(root)
    chosen = [n for n in nics if n["physical"]] or nics
    return str(chosen[0]["mac"]) if chosen else None


def chassis(root: Path = ROOT) -> dict[str, str]:
    dmi = root / "sys/class/dmi/id"
    return {name: value for name in CHASSIS_FIELDS if (value := _read(dmi / name))}


def facts(root: Path = ROOT) -> dict[str, Any]:
    return {
        "cpu": cpu(root),
        "memory": memory(root),
        "disks": disks(root),
        "interfaces": interfaces(root),
        "chassis": chassis(root),
    }


def mounted(root: Path = ROOT) -> set[str]:
    """Devices with a mounted filesystem (the first column of /proc/mounts)."""
    return {line.split()[0] for line in _read(root / "proc/mounts").splitlines() if line.strip()}
