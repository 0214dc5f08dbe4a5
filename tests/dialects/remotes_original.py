"""Django Remotes `client.py` 0.3.1 on the wire, for the tests: its headers, its
`urljoin`s against the saved `server_url`, its settings file, its RSA and Fernet use (straight
from `cryptography`, as its `encryption/` modules do, not through taskfleet's helpers), and
the temporary Python file it runs. Async, because the server shares the test's event loop;
the script runs with this interpreter where the original runs `python` from PATH.
"""

from __future__ import annotations

import asyncio
import base64
import configparser
import os
import sys
import tempfile
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HEADERS = {"CLIENT-AGENT": "Django Remotes", "CLIENT-VERSION": "0.3.1"}
OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)


class OriginalClient:
    def __init__(self, http: httpx.AsyncClient, settings_file: Path) -> None:
        self.http = http  # follows redirects, as requests does
        self.settings_file = settings_file
        self.settings = configparser.RawConfigParser()
        self.settings.read(settings_file)
        self.key: rsa.RSAPrivateKey | None = None
        self.responses: list[httpx.Response] = []
        if path := self.get("host", "private_key"):
            self.key = serialization.load_pem_private_key(Path(path).read_bytes(), None)  # type: ignore[assignment]

    # -- settings, as remotes/client/settings.py --------------------------------------------

    def get(self, section: str, option: str) -> str | None:
        if section not in self.settings.sections():
            return None
        return self.settings.get(section, option, fallback=None)

    def set(self, section: str, option: str, value: str) -> None:
        if section not in self.settings.sections():
            self.settings.add_section(section)
        self.settings.set(section, option, value)

    def save(self) -> None:
        with open(self.settings_file, "w") as file:
            self.settings.write(file)

    def build_url(self, option: str, extra: str | None = None) -> str:
        url = urllib.parse.urljoin(
            self.get("server", "server_url") or "", self.get("endpoints", option) or ""
        )
        return url if not extra else f"{url}{extra}"

    # -- requests, as remotes/client/api.py (every answer goes through .json()) -----------

    async def request(
        self, method: str, url: str, token: str | None = None, data: Any = None
    ) -> Any:
        headers = dict(HEADERS)
        if token is not None:
            headers["Authorization"] = f"Token {token}"
        response = await self.http.request(method, url, headers=headers, json=data)
        self.responses.append(response)
        return response.json()

    @property
    def last(self) -> httpx.Response:
        return self.responses[-1]

    # -- crypto, as encryption/rsa_key.py and fernet_encrypt.py ---------------------------

    def decrypt(self, text: str) -> str:
        assert self.key is not None
        return self.key.decrypt(base64.b64decode(text), OAEP).decode("utf-8")

    def decrypt_option(self, section: str, option: str) -> str | None:
        if encrypted := self.get(section, option):
            try:
                return self.decrypt(encrypted)
            except ValueError:
                return None
        return None

    def host_fernet(self) -> Fernet:
        host_uuid = uuid.UUID(hex=self.decrypt_option("host", "uuid"))
        return Fernet(base64.b64encode(host_uuid.hex.encode("utf-8")))

    # -- the actions ------------------------------------------------------------------------

    async def status(self, url: str) -> Any:
        results = await self.request("GET", urllib.parse.urljoin(url, "api/status"))
        self.set("server", "server_url", results["server_url"])
        self.set("endpoints", "discover", results["discover"])
        return results

    async def discover(self) -> Any:
        results = await self.request("GET", self.build_url("discover"))
        for endpoint, path in results["endpoints"].items():
            self.set("endpoints", endpoint, path)
        return results

    def generate_keys(self, folder: Path, bits: int) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        private, public = folder / "private.key", folder / "public.key"
        private.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        public.write_bytes(self.public_pem().encode())
        self.set("host", "private_key", os.path.abspath(private))
        self.set("host", "public_key", os.path.abspath(public))

    def public_pem(self) -> str:
        assert self.key is not None
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("utf-8")
        )

    async def host_register(self, token: str) -> Any:
        results = await self.request(
            "POST", self.build_url("host_register"), token, {"public_key": self.public_pem()}
        )
        if "status" in results:
            self.set("host", "uuid", results["encrypted"])
        return results

    def signature(self) -> str:
        assert self.key is not None
        return base64.b64encode(self.key.sign(b"OK", PSS, hashes.SHA256())).decode("utf-8")

    async def host_verify(self, token: str) -> Any:
        data = {"uuid": self.decrypt_option("host", "uuid"), "encrypted": self.signature()}
        results = await self.request("POST", self.build_url("host_verify"), token, data)
        self.set("host", "token", results["encrypted"])
        return results

    async def new_host(self, url: str, token: str, folder: Path, bits: int) -> Any:
        self.generate_keys(folder, bits)
        await self.status(url)
        await self.discover()
        await self.host_register(token)
        return await self.host_verify(token)

    def host_token(self) -> str | None:
        return self.decrypt_option("host", "token")

    async def host_status(self) -> Any:
        return await self.request("GET", self.build_url("host_status"), self.host_token())

    async def commands_list(self) -> Any:
        return await self.request("GET", self.build_url("commands_list"), self.host_token())

    async def command_get(self, command_id: int) -> tuple[int, Any]:
        url = self.build_url("command_get", f"{command_id}/")
        results = await self.request("GET", url, self.host_token())
        if results.get("id") != command_id:
            return 1, results
        status, stdout, stderr = await self.run(results)
        data = {
            "output": self.host_fernet().encrypt(stdout.encode("utf-8")).decode("utf-8"),
            "result": self.host_fernet().encrypt(stderr.encode("utf-8")).decode("utf-8"),
        }
        url = self.build_url("command_post", f"{command_id}/")
        results["output"] = await self.request("POST", url, self.host_token(), data)
        results["stdout"], results["stderr"] = stdout, stderr
        return status, results

    async def run(self, results: dict[str, Any]) -> tuple[int, str, str]:
        """Writes and runs the script exactly as the original does."""
        decryptor = Fernet(self.decrypt(results["encryption_key"]).encode("utf-8"))

        def plain(text: str) -> str:
            return decryptor.decrypt(text.encode("utf-8")).decode("utf-8")

        fd, source = tempfile.mkstemp(prefix="django_remotes-", text=True)
        with os.fdopen(fd, "w") as file:
            file.write("import sys\n")
            file.write('__RESULT__ = ""\n')
            settings = {k: plain(v) for k, v in results["settings"].items()}
            file.write(f"__SETTINGS__ = {settings}\n")
            variables = {k: plain(v) if v else None for k, v in results["variables"].items()}
            file.write(f"__VARIABLES__ = {variables}\n")
            file.write("\n")
            file.write(plain(results["command"]))
            file.write(
                "\n\nimport json\nimport sys\nif not isinstance(__RESULT__, list):\n"
                "    __RESULT__ = [__RESULT__]\n"
                "sys.stderr.write(json.dumps(obj=__RESULT__,\n"
                "                            indent=2))\n"
            )
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                source,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(process.communicate(), results["timeout"])
        finally:
            os.remove(source)
        return process.returncode or 0, stdout.decode("utf-8"), stderr.decode("utf-8")

    async def commands_process(self) -> Any:
        results = await self.commands_list()
        results["commands_results"] = {}
        for item in results["results"]:
            _, results["commands_results"][item["command"]] = await self.command_get(
                item["command"]
            )
        return results
