"""`taskfleet remotes-client`: Django Remotes' `client.py` 0.3.1, on httpx and
`taskfleet.core.crypto`, for hosts that replace the old client too.

The same actions, arguments, settings file (configparser: `[server] server_url`,
`[endpoints] …`, `[host] private_key, public_key, uuid, token`), requests, encryption,
script and output: each action prints its results as indented JSON and exits with its
status. What differs (docs/dialects/remotes.md): errors end with a message instead of a
traceback, `commands_monitor` runs once at start and then every interval, the private key
file is readable by its owner only, and `--python` picks the interpreter (`python` from PATH
by default, as the original).
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import httpx

from taskfleet.core import crypto, errors

ACTIONS = (
    "command_get",
    "commands_list",
    "commands_monitor",
    "commands_process",
    "discover",
    "generate_keys",
    "host_register",
    "host_status",
    "host_verify",
    "new_host",
    "status",
)
HEADERS = {"CLIENT-AGENT": "Django Remotes", "CLIENT-VERSION": "0.3.1"}
REQUEST_TIMEOUT_SECONDS = 60.0
Outcome = tuple[int, Any]  #: an action's exit status and the results it prints


class Failure(Exception):
    """An error to show the user as is (the original crashed with a traceback instead)."""


class SettingsFile:
    """The original's settings file, read at start and written back at the end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.parser = configparser.RawConfigParser()
        self.parser.read(path)

    def get(self, section: str, option: str) -> str | None:
        if section not in self.parser.sections():
            return None
        return self.parser.get(section, option, fallback=None)

    def set(self, section: str, option: str, value: str) -> None:
        if section not in self.parser.sections():
            self.parser.add_section(section)
        self.parser.set(section, option, value)

    def save(self) -> None:
        with open(self.path, "w") as file:
            self.parser.write(file)

    def url(self, option: str, extra: str = "") -> str:
        """An endpoint joined against the server URL, as the original builds them."""
        joined = urllib.parse.urljoin(
            self.get("server", "server_url") or "", self.get("endpoints", option) or ""
        )
        return f"{joined}{extra}"


class RemotesClient:
    def __init__(self, settings: SettingsFile, http: httpx.Client, python: str) -> None:
        self.settings = settings
        self.http = http
        self.python = python
        self.key: crypto.PrivateKey | None = None
        if path := settings.get("host", "private_key"):
            with contextlib.suppress(FileNotFoundError):
                self.key = crypto.load_private_key(Path(path).read_bytes())

    # -- plumbing ---------------------------------------------------------------------------

    def request(self, method: str, url: str, token: str | None = None, data: Any = None) -> Any:
        headers = dict(HEADERS)
        if token is not None:
            headers["Authorization"] = f"Token {token}"
        try:
            response = self.http.request(method, url, headers=headers, json=data)
        except httpx.HTTPError as exc:
            raise Failure(f"{method} {url} failed: {exc}") from exc
        try:
            return response.json()
        except ValueError:
            reason = f"{method} {url} answered HTTP {response.status_code} without JSON"
            raise Failure(reason) from None

    def _key(self) -> crypto.PrivateKey:
        if self.key is None:
            raise Failure("no private key: run the generate_keys action first")
        return self.key

    def decrypt_option(self, section: str, option: str) -> str | None:
        """A value the server encrypted to our key, or None (unset, or another key's)."""
        encrypted = self.settings.get(section, option)
        if not encrypted or self.key is None:
            return None
        try:
            return crypto.rsa_decrypt(self.key, encrypted)
        except errors.Invalid:
            return None

    def _host_token(self) -> str:
        token = self.decrypt_option("host", "token")
        if token is None:
            raise Failure("this host is not verified: run host_verify (or new_host) first")
        return token

    def _host_key(self) -> bytes:
        host_uuid = self.decrypt_option("host", "uuid")
        if host_uuid is None:
            raise Failure("this host is not registered: run host_register (or new_host) first")
        return crypto.uuid_fernet_key(host_uuid)

    # -- registration -----------------------------------------------------------------------

    def status(self, url: str) -> Outcome:
        results = self.request("GET", urllib.parse.urljoin(url, "api/status"))
        self._expect(results, "server_url", "discover")
        self.settings.set("server", "server_url", results["server_url"])
        self.settings.set("endpoints", "discover", results["discover"])
        return 0, results

    def discover(self) -> Outcome:
        results = self.request("GET", self.settings.url("discover"))
        self._expect(results, "endpoints")
        for endpoint, path in results["endpoints"].items():
            self.settings.set("endpoints", endpoint, str(path))
        return 0, results

    @staticmethod
    def _expect(results: Any, *fields: str) -> None:
        if not isinstance(results, dict) or any(f not in results for f in fields):
            raise Failure(f"unexpected answer: {json.dumps(results)[:500]}")

    def generate_keys(self, private_key: str, public_key: str, bits: int) -> Outcome:
        self.key = crypto.generate_private_key(bits)
        fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(crypto.private_pem(self.key))
        Path(public_key).write_text(crypto.public_pem(self.key.public_key()))
        self.settings.set("host", "private_key", os.path.abspath(private_key))
        self.settings.set("host", "public_key", os.path.abspath(public_key))
        return 0, None

    def host_register(self, token: str) -> Outcome:
        if self.decrypt_option("host", "uuid"):
            return 1, {"status": "ERROR", "message": "Host UUID already set"}
        public_key = crypto.public_pem(self._key().public_key())
        results = self.request(
            "POST", self.settings.url("host_register"), token, {"public_key": public_key}
        )
        if not isinstance(results, dict) or "encrypted" not in results:
            return 2, results
        self.settings.set("host", "uuid", results["encrypted"])
        return 0, results

    def host_verify(self, token: str) -> Outcome:
        data = {
            "uuid": self.decrypt_option("host", "uuid"),
            "encrypted": crypto.sign(self._key(), "OK"),
        }
        results = self.request("POST", self.settings.url("host_verify"), token, data)
        if not isinstance(results, dict) or "encrypted" not in results:
            return 2, results
        self.settings.set("host", "token", results["encrypted"])
        return 0, results

    def host_status(self) -> Outcome:
        return 0, self.request("GET", self.settings.url("host_status"), self._host_token())

    # -- commands -----------------------------------------------------------------------------

    def commands_list(self) -> Outcome:
        return 0, self.request("GET", self.settings.url("commands_list"), self._host_token())

    def command_get(self, command_id: int) -> Outcome:
        token = self._host_token()
        results = self.request("GET", self.settings.url("command_get", f"{command_id}/"), token)
        if not isinstance(results, dict) or results.get("id") != command_id:
            return 1, results
        source = self._script(results)
        try:
            status, stdout, stderr = self._run(source, results.get("timeout"))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(source)
        if stdout is None or stderr is None:
            results["output"] = {"status": "ERROR", "message": "timeout"}
            return status, results
        host_key = self._host_key()
        data = {
            "output": crypto.fernet_encrypt(host_key, stdout),
            "result": crypto.fernet_encrypt(host_key, stderr),
        }
        url = self.settings.url("command_post", f"{command_id}/")
        results["output"] = self.request("POST", url, token, data)
        results["stdout"], results["stderr"] = stdout, stderr
        return status, results

    def _script(self, results: dict[str, Any]) -> str:
        """The original's temporary script: `__RESULT__`, `__SETTINGS__` and `__VARIABLES__`,
        the command, then `__RESULT__` as a JSON list on stderr."""
        try:
            key = crypto.rsa_decrypt(self._key(), results["encryption_key"]).encode()

            def plain(text: str) -> str:
                return crypto.fernet_decrypt(key, text, "the command")

            settings = {k: plain(v) for k, v in results["settings"].items()}
            variables = {k: plain(v) if v else None for k, v in results["variables"].items()}
            command = plain(results["command"])
        except (errors.Invalid, KeyError, AttributeError, TypeError) as exc:
            raise Failure(f"cannot decrypt the command: {exc}") from exc
        fd, path = tempfile.mkstemp(prefix="django_remotes-", suffix=".py", text=True)
        with os.fdopen(fd, "w") as file:
            file.write(f'__RESULT__ = ""\n__SETTINGS__ = {settings!r}\n')
            file.write(f"__VARIABLES__ = {variables!r}\n\n{command}")
            file.write(
                "\n\nimport json\nimport sys\nif not isinstance(__RESULT__, list):\n"
                "    __RESULT__ = [__RESULT__]\n"
                "sys.stderr.write(json.dumps(obj=__RESULT__, indent=2))\n"
            )
        return path

    def _run(self, source: str, timeout: Any) -> tuple[int, str | None, str | None]:
        limit = timeout if isinstance(timeout, int | float) and timeout > 0 else None
        try:
            done = subprocess.run([self.python, source], capture_output=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return -1, None, None
        except OSError as exc:
            raise Failure(f"cannot run {self.python}: {exc}") from exc
        out, err = (s.decode("utf-8", "replace") for s in (done.stdout, done.stderr))
        return done.returncode, out, err

    def commands_process(self) -> Outcome:
        status, results = self.commands_list()
        self._expect(results, "results")
        done: dict[int, Any] = {}
        results["commands_results"] = done
        for item in results["results"]:
            _, done[item["command"]] = self.command_get(item["command"])
        return status, results

    def commands_monitor(self, interval: int, iterations: int | None) -> Outcome:
        rounds = 0
        while True:
            self.commands_process()
            rounds += 1
            if iterations is not None and rounds >= iterations:
                return 0, None
            time.sleep(interval)


# -- the command line ---------------------------------------------------------------------------


def _need(value: object, message: str) -> None:
    if not value:
        raise click.UsageError(message)


def _check(action: str, options: dict[str, Any]) -> None:
    """The original's argument checks and messages."""
    if action in ("status", "new_host"):
        _need(options["url"], "missing URL argument")
    if action in ("host_register", "host_verify", "new_host"):
        _need(options["token"], "missing token argument")
    if action in ("generate_keys", "new_host"):
        _need(options["private_key"], "missing private_key argument")
        _need(options["public_key"], "missing public_key argument")
    if action == "command_get":
        _need(options["command"], "missing command argument")
    if action == "commands_monitor":
        _need(options["interval"], "missing monitoring interval")


def _perform(client: RemotesClient, action: str, o: dict[str, Any]) -> Outcome:
    if action == "new_host":
        client.generate_keys(o["private_key"], o["public_key"], o["key_bits"])
        client.status(o["url"])
        client.discover()
        status, results = client.host_register(o["token"])
        return client.host_verify(o["token"]) if status == 0 else (status, results)
    simple: dict[str, Callable[[], Outcome]] = {
        "status": lambda: client.status(o["url"]),
        "discover": client.discover,
        "generate_keys": lambda: client.generate_keys(
            o["private_key"], o["public_key"], o["key_bits"]
        ),
        "host_register": lambda: client.host_register(o["token"]),
        "host_verify": lambda: client.host_verify(o["token"]),
        "host_status": client.host_status,
        "commands_list": client.commands_list,
        "command_get": lambda: client.command_get(o["command"]),
        "commands_process": client.commands_process,
        "commands_monitor": lambda: client.commands_monitor(o["interval"], o["iterations"]),
    }
    return simple[action]()


def _default_python() -> str:
    return "python" if shutil.which("python") else sys.executable


@click.command("remotes-client")
@click.option("--action", required=True, type=click.Choice(ACTIONS), help="Action to execute.")
@click.option("--settings", "-S", "settings_file", required=True, help="Settings filename.")
@click.option("--private_key", default=None, help="Private key filename.")
@click.option("--public_key", default=None, help="Public key filename.")
@click.option("--url", default=None, help="Server URL.")
@click.option("--token", default=None, help="Authentication token.")
@click.option("--command", type=int, default=None, help="Command ID.")
@click.option("--interval", type=int, default=None, help="Seconds between commands rounds.")
@click.option("--python", default=None, help="Interpreter for commands [python on PATH].")
@click.option("--key-bits", type=click.IntRange(2048, 16384), default=4096, hidden=True)
@click.option("--iterations", type=click.IntRange(1), default=None, hidden=True)
def remotes_client(action: str, settings_file: str, **options: Any) -> None:
    """A Django Remotes client: registers this host and runs the commands the server
    assigns it (the original client.py's actions, settings file and output)."""
    _check(action, options)
    settings = SettingsFile(settings_file)
    python = options["python"] or _default_python()
    with httpx.Client(follow_redirects=True, timeout=REQUEST_TIMEOUT_SECONDS) as http:
        client = RemotesClient(settings, http, python)
        try:
            status, results = _perform(client, action, options)
        except (Failure, errors.Error) as exc:
            settings.save()
            raise click.ClickException(str(exc)) from exc
    if results is not None:
        click.echo(json.dumps(results, indent=2) if results else None)
    settings.save()
    click.get_current_context().exit(status)
