"""The agent's teeth settings: a TOML file given with `--teeth-config` (all keys optional).

    image_source = "http://images.example:8000/images"  # <source>/<id> and <source>/<id>.sha256
    cache_dir = "/var/lib/taskfleet/images"
    cache_capacity_bytes = 50_000_000_000
    config_drive_dir = "/var/lib/taskfleet/configdrive"
    allow_kexec = false            # run_image never kexecs or reboots unless allowed
    allow_reboot = false
    kexec_command = ["systemctl", "kexec"]
    reboot_command = ["systemctl", "reboot"]
    erase_devices = ["/dev/sdb"]   # decom.disk_erase touches these and nothing else
    [firmware_commands]            # decom.firmware_secure: the command run per device
    "/dev/sdb" = ["hdparm", "--security-freeze", "/dev/sdb"]

Also `ping_interval` (seconds, 20 as teeth-agent) and, for a server that listens with TLS,
`tls = true` with `tls_ca` (its CA, else the system's) and `tls_cert`/`tls_key` (a client
certificate, when the server asks for one).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def _default_root() -> Path:
    return Path.home() / ".taskfleet" / "teeth"


@dataclass(frozen=True, slots=True, kw_only=True)
class TeethConfig:
    image_source: str = ""
    cache_dir: Path = field(default_factory=lambda: _default_root() / "images")
    cache_capacity_bytes: int = 10 * 1024**3
    config_drive_dir: Path = field(default_factory=lambda: _default_root() / "configdrive")
    allow_kexec: bool = False
    allow_reboot: bool = False
    kexec_command: tuple[str, ...] = ("systemctl", "kexec")
    reboot_command: tuple[str, ...] = ("systemctl", "reboot")
    erase_devices: tuple[str, ...] = ()
    firmware_commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ping_interval: float = 20.0
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of strings")
    return tuple(value)


def _cast(key: str, value: Any, default: Any) -> Any:
    if key == "firmware_commands":
        if not isinstance(value, dict):
            raise ValueError("firmware_commands must be a table of device = [command, args]")
        return {str(k): _strings(f"firmware_commands.{k}", v) for k, v in value.items()}
    if isinstance(default, tuple):
        return _strings(key, value)
    if isinstance(default, Path):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key} must be a path")
        return Path(value).expanduser()
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
        return value
    if isinstance(default, int | float) and (
        isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
    ):
        raise ValueError(f"{key} must be a positive number")
    if isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return type(default)(value)


def load(path: Path | None) -> TeethConfig:
    """The settings in the file (defaults without one). Raises ValueError or OSError."""
    if path is None:
        return TeethConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    defaults = TeethConfig()
    known = {f.name: getattr(defaults, f.name) for f in fields(TeethConfig)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ValueError(f"{path}: unknown setting {key!r}")
        try:
            values[name] = _cast(name, value, known[name])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return TeethConfig(**values)
