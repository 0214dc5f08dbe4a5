"""The Django Remotes dialect against a real server, played by `OriginalClient` exactly as
`client.py` 0.3.1 does on the wire: the redirect of `api/status`, registration with a
registration token and a public key, verification by signature, host status, the commands
list, fetching a command encrypted to the host's key, running it with Python, and posting
its output and result encrypted with the host's UUID key. The server stores them as the
host's task results, visible through /api/v1. Refusals come back as JSON and store nothing.
"""

from __future__ import annotations

import base64
import platform
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from taskfleet.core import crypto
from tests.api.conftest import Live
from tests.dialects.remotes_original import HEADERS, OriginalClient

PREFIX = "/remotes/"
BITS = 2048  #: the original's 4096-bit keys take a second or more to make; one test uses them
SAY_HI = """import platform
print("hello from", __SETTINGS__["who"])
__RESULT__ = ["HI", platform.python_version()]
"""
READ_BACK = """print("greeting was", __VARIABLES__["greeting"])
__RESULT__ = __VARIABLES__["greeting"] + "!"
"""


async def created(response: httpx.Response) -> Any:
    assert response.status_code == 201, response.text
    return response.json()


async def registration_token(admin: httpx.AsyncClient) -> str:
    token: str = (await created(await admin.post("/api/v1/registration-tokens", json={})))["token"]
    return token


async def command_group(
    admin: httpx.AsyncClient, name: str = "g", host_groups: tuple[str, ...] = ("all-hosts",)
) -> int:
    body = {"name": name, "host_groups": list(host_groups)}
    group_id: int = (await created(await admin.post("/api/v1/command-groups", json=body)))["id"]
    return group_id


async def add_command(
    admin: httpx.AsyncClient, group_id: int, name: str, source: str, **extra: Any
) -> int:
    body = {"group_id": group_id, "name": name, "source": source, **extra}
    command_id: int = (await created(await admin.post("/api/v1/commands", json=body)))["id"]
    return command_id


def original(live: Live, folder: Path) -> OriginalClient:
    return OriginalClient(live.client(follow_redirects=True), folder / "settings.ini")


async def new_host(
    live: Live, admin: httpx.AsyncClient, folder: Path, bits: int = BITS
) -> OriginalClient:
    client = original(live, folder)
    verified = await client.new_host(
        live.base_url + PREFIX, await registration_token(admin), folder, bits
    )
    assert verified["status"] == "OK", verified
    return client


async def command_tasks(admin: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await admin.get("/api/v1/tasks", params={"type": "command"})
    tasks: list[dict[str, Any]] = response.json()["tasks"]
    return tasks


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    """A JSON error answer with a human-readable message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    message = body.get("message", body.get("detail"))
    assert isinstance(message, str) and message, body
    return body


# -- the whole life of a host, as the original client lives it ------------------------------


async def test_the_original_client_registers_verifies_and_runs_commands(
    live: Live, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    group = await command_group(admin)
    first = await add_command(
        admin,
        group,
        "say hi",
        SAY_HI,
        order=1,
        settings={"who": "taskfleet"},
        result_variables=["greeting", "version"],
    )
    second = await add_command(
        admin, group, "read back", READ_BACK, order=2, variables=["greeting"]
    )
    token = await registration_token(admin)
    client = original(live, tmp_path)
    client.generate_keys(tmp_path, BITS)

    status = await client.status(live.base_url + PREFIX)
    (moved,) = client.last.history  # requests follows Django's redirect, and so do we
    assert (moved.status_code, moved.headers["location"]) == (301, "/remotes/api/status/")
    assert moved.json() and moved.request.url.path == "/remotes/api/status"
    assert client.last.request.headers["client-agent"] == HEADERS["CLIENT-AGENT"]
    assert status == {
        "status": "OK",
        "app_name": "Django Remotes",
        "version": "0.3.1",
        "server_url": live.base_url + PREFIX,
        "discover": "/remotes/api/v1/discover/",
    }
    discovered = await client.discover()
    assert discovered["endpoints"] == {
        "command_get": "/remotes/api/v1/commands/get/",
        "command_post": "/remotes/api/v1/commands/post/",
        "commands_list": "/remotes/api/v1/commands/list/",
        "host_register": "/remotes/api/v1/host/register/",
        "host_status": "/remotes/api/v1/host/status/",
        "host_verify": "/remotes/api/v1/host/verify/",
    }

    registered = await client.host_register(token)
    assert set(registered) == {"status", "encrypted"} and client.last.status_code == 200
    assert uuid.UUID(client.decrypt_option("host", "uuid") or "").version == 4
    pending = (await admin.get("/api/v1/agents/host-000001")).json()
    assert (pending["enabled"], pending["verified"], pending["groups"]) == (False, False, [])
    assert pending["public_key"] == client.public_pem()

    verified = await client.host_verify(token)
    assert set(verified) == {"status", "encrypted"} and len(client.host_token() or "") == 40
    active = (await admin.get("/api/v1/agents/host-000001")).json()
    assert (active["enabled"], active["verified"], active["groups"]) == (True, True, ["all-hosts"])
    host_status = await client.host_status()
    (all_hosts,) = host_status.pop("hosts_groups")
    assert all_hosts["name"] == "all-hosts" and isinstance(all_hosts["id"], int)
    assert host_status["user_name"] == "host-000001" and host_status["status"] == "OK"

    listed = await client.commands_list()
    assert listed == {
        "status": "OK",
        "results": [{"group": group, "command": first}, {"group": group, "command": second}],
    }
    processed = await client.commands_process()
    said, read = processed["commands_results"][first], processed["commands_results"][second]
    assert said["output"] == {"status": "OK", "results": {"id": first}}
    assert client.last.status_code == 201
    assert said["stdout"] == "hello from taskfleet\n"
    assert read["stdout"] == "greeting was HI\n"
    assert (await client.commands_list())["results"] == []

    version = platform.python_version()
    assert [(t["status"], t["target"], t["result"]) for t in await command_tasks(admin)] == [
        (
            "completed",
            "host-000001",
            {"output": "hello from taskfleet\n", "result": ["HI", version]},
        ),
        ("completed", "host-000001", {"output": "greeting was HI\n", "result": ["HI!"]}),
    ]
    runs = (await admin.get(f"/api/v1/commands/{first}/runs")).json()
    assert [r["status"] for r in runs] == ["completed"]


async def test_rsa_4096_keys_as_the_original_makes_them(
    live: Live, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    group = await command_group(admin)
    command_id = await add_command(admin, group, "hi", '__RESULT__ = "4096"\n')
    client = await new_host(live, admin, tmp_path, bits=4096)
    register = next(r for r in client.responses if r.request.url.path.endswith("/register/"))
    assert len(register.request.content) > 800  # a 4096-bit SPKI PEM, as the appendix saw

    status, results = await client.command_get(command_id)
    assert (status, results["output"]["status"], results["stderr"]) == (0, "OK", '[\n  "4096"\n]')
    ((task),) = await command_tasks(admin)
    assert task["result"] == {"output": "", "result": ["4096"]}


# -- refusals: JSON answers, nothing stored -----------------------------------------------


async def test_wrong_and_revoked_tokens_are_refused(
    live: Live, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    client = original(live, tmp_path)
    client.generate_keys(tmp_path, BITS)
    await client.status(live.base_url + PREFIX)
    await client.discover()
    url = client.build_url("host_register")
    key = {"public_key": client.public_pem()}

    http = live.client()
    no_credentials = error(await http.post(url, json=key), 401)
    assert no_credentials == {"detail": "Authentication credentials were not provided."}
    wrong = await http.post(url, json=key, headers={"Authorization": "Token " + "0" * 40})
    assert error(wrong, 401) == {"detail": "Invalid token."}
    assert wrong.headers["www-authenticate"] == "Token"

    token = await registration_token(admin)
    tokens = (await admin.get("/api/v1/registration-tokens")).json()
    revoked = await admin.delete(f"/api/v1/registration-tokens/{tokens[0]['id']}")
    assert revoked.json()["revoked_at"] is not None
    assert (await client.host_register(token)) == {"detail": "Invalid token."}
    assert client.last.status_code == 401
    assert (await admin.get("/api/v1/agents")).json() == []
    assert (await admin.get("/api/v1/registration-tokens")).json()[0]["uses"] == 0


async def test_a_wrong_signature_or_token_does_not_verify_the_host(
    live: Live, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    token, other_token = await registration_token(admin), await registration_token(admin)
    client = original(live, tmp_path)
    client.generate_keys(tmp_path, BITS)
    await client.status(live.base_url + PREFIX)
    await client.discover()
    await client.host_register(token)
    url = client.build_url("host_verify")
    host_uuid = client.decrypt_option("host", "uuid")

    def verify(token: str, **body: Any) -> Any:
        headers = {**HEADERS, "Authorization": f"Token {token}"}
        return live.client().post(url, json=body, headers=headers)

    other_key = crypto.generate_private_key(BITS)
    forged = crypto.sign(other_key, "OK")
    refusals = [
        (await verify(token, uuid=host_uuid, encrypted=forged), "Invalid signature"),
        (await verify(token, uuid=host_uuid, encrypted="%%%"), "Invalid signature"),
        (await verify(other_token, uuid=host_uuid, encrypted=client.signature()), "Host not found"),
        (
            await verify(token, uuid=str(uuid.uuid4()), encrypted=client.signature()),
            "Host not found",
        ),
        (await verify(token, uuid="not a uuid", encrypted=client.signature()), "Host not found"),
        (await verify(token, encrypted=client.signature()), "Missing host UUID"),
        (await verify(token, uuid=host_uuid), "Missing encrypted text"),
    ]
    for response, message in refusals:
        assert error(response, 400) == {"status": "ERROR", "message": message}
    host = (await admin.get("/api/v1/agents/host-000001")).json()
    assert (host["enabled"], host["verified"]) == (False, False)
    assert [a["name"] for a in (await admin.get("/api/v1/accounts")).json()] == ["root"]

    assert (await client.host_verify(token))["status"] == "OK"
    again = await verify(token, uuid=host_uuid, encrypted=client.signature())
    assert error(again, 400)["message"] == "Host already verified"


async def test_registration_refuses_missing_and_bad_keys(
    live: Live, admin: httpx.AsyncClient
) -> None:
    headers = {"Authorization": f"Token {await registration_token(admin)}"}
    url = PREFIX + "api/v1/host/register/"
    http = live.client(headers=headers)
    small = crypto.public_pem(crypto.generate_private_key(1024).public_key())
    for body, message in [
        ({}, "Missing host public key"),
        ({"public_key": "-----BEGIN PUBLIC KEY-----\nnope\n"}, "Invalid PEM key"),
        ({"public_key": 42}, "Invalid PEM key"),
        ({"public_key": "x\x00" * 10}, "Invalid PEM key"),
    ]:
        assert error(await http.post(url, json=body), 400) == {
            "status": "ERROR",
            "message": message,
        }
    assert "2048 bits" in error(await http.post(url, json={"public_key": small}), 400)["message"]
    assert (await admin.get("/api/v1/agents")).json() == []


async def test_a_host_cannot_get_or_post_a_command_of_another_group(
    live: Live, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    linux = await command_group(admin, "linux only", ("linux",))
    command_id = await add_command(admin, linux, "uname", "import os; print(os.uname())")
    client = await new_host(live, admin, tmp_path)  # in all-hosts only
    assert (await client.commands_list())["results"] == []

    status, results = await client.command_get(command_id)
    assert status == 1 and error(client.last, 404) == results
    fernet = client.host_fernet()
    body = {"output": fernet.encrypt(b"x").decode(), "result": fernet.encrypt(b"[]").decode()}
    url = client.build_url("command_post", f"{command_id}/")
    posted = await client.request("POST", url, client.host_token(), body)
    assert error(client.last, 403) == posted and posted["status"] == "ERROR"
    for bad in ("0", "abc", "1.5", "9" * 30):
        await client.request("GET", client.build_url("command_get", f"{bad}/"), client.host_token())
        assert set(error(client.last, 404)) == {"detail"}
    assert await command_tasks(admin) == []


async def test_tampered_ciphertext_is_refused_and_nothing_is_stored(
    live: Live, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    group = await command_group(admin)
    command_id = await add_command(admin, group, "c", "print('x')", result_variables=["v"])
    client = await new_host(live, admin, tmp_path)
    fernet = client.host_fernet()
    good = fernet.encrypt(b'["fine"]').decode()
    token = bytearray(base64.urlsafe_b64decode(fernet.encrypt(b"stolen output")))
    token[-40] ^= 1  # a flipped ciphertext bit: the HMAC no longer matches
    tampered = base64.urlsafe_b64encode(bytes(token)).decode()
    foreign = Fernet(Fernet.generate_key()).encrypt(b"[]").decode()
    url = client.build_url("command_post", f"{command_id}/")

    async def post(**body: Any) -> dict[str, Any]:
        await client.request("POST", url, client.host_token(), body)
        return error(client.last, 400)

    assert "output was not encrypted" in (await post(output=tampered, result=good))["message"]
    assert "result was not encrypted" in (await post(output=good, result=foreign))["message"]
    assert "output was not encrypted" in (await post(output="plain text", result=good))["message"]
    missing = await post(result=good)
    assert missing["output"] == ["This field is required."] and missing["status"] == "ERROR"
    assert (await post(output=12, result=good))["output"] == ["This field is required."]
    assert await command_tasks(admin) == []

    await client.request(
        "GET", client.build_url("command_get", f"{command_id}/"), client.host_token()
    )
    await post(output=tampered, result=good)
    ((run),) = await command_tasks(admin)
    assert (run["status"], run["result"]) == ("active", None)  # the fetch started it; no result
    assert (await client.commands_list())["results"] == [{"group": group, "command": command_id}]


async def test_a_command_that_dies_fails_its_task(
    live: Live, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    group = await command_group(admin)
    command_id = await add_command(admin, group, "boom", "print('before')\n1 / 0\n")
    client = await new_host(live, admin, tmp_path)
    status, results = await client.command_get(command_id)
    assert status == 1 and results["output"]["status"] == "OK"  # the client posts it anyway
    ((task),) = await command_tasks(admin)
    assert task["status"] == "failed" and "ZeroDivisionError" in task["error"]
    outputs = (await admin.get(f"/api/v1/tasks/{task['id']}/outputs")).json()
    assert [o["data"] for o in outputs] == [{"output": "before\n"}]
    assert (await client.commands_list())["results"] == []


@pytest.mark.settings(max_body_bytes=4096)
async def test_every_answer_is_json(live: Live, admin: httpx.AsyncClient, tmp_path: Path) -> None:
    await add_command(admin, await command_group(admin), "c", "pass")
    client = await new_host(live, admin, tmp_path)
    host = live.client(headers={"Authorization": f"Token {client.host_token()}"})
    anonymous = live.client()
    assert error(await anonymous.get(PREFIX + "nowhere"), 404) == {"detail": "Not found."}
    assert error(await anonymous.get(PREFIX), 404) == {"detail": "Not found."}
    assert error(await anonymous.get(PREFIX + "api/v1/host/register/"), 405)["detail"] == (
        'Method "GET" not allowed.'
    )
    assert error(await anonymous.post(PREFIX + "api/status"), 405)
    assert error(await anonymous.delete(PREFIX + "api/status/"), 405)
    assert error(await anonymous.get(PREFIX + "api/v1/host/status/"), 401)
    assert (await anonymous.get(PREFIX + "api/status/")).json()["status"] == "OK"
    assert (await host.get(PREFIX + "api/v1/host/status")).json()["status"] == "OK"  # no slash
    assert error(await host.post(PREFIX + "api/v1/commands/post/1/", content=b"{"), 400)
    assert error(await host.post(PREFIX + "api/v1/commands/post/1/", content=b"[]"), 400)
    big = {"output": "x" * 5000, "result": ""}
    assert error(await host.post(PREFIX + "api/v1/commands/post/1/", json=big), 413)
    admin_token = admin.headers["authorization"].split()[1]
    as_admin = live.client(headers={"Authorization": f"Token {admin_token}"})
    assert error(await as_admin.get(PREFIX + "api/v1/commands/list/"), 403)
    registration = {"Authorization": f"Token {await registration_token(admin)}"}
    assert error(await live.client(headers=registration).get(PREFIX + "api/v1/host/status/"), 401)


@pytest.mark.settings(remotes_prefix="/elsewhere", remotes_server_url="https://remotes.example/x")
async def test_the_prefix_and_the_server_url_are_configured(live: Live) -> None:
    status = (await live.client(follow_redirects=True).get("/elsewhere/api/status")).json()
    assert (status["server_url"], status["discover"]) == (
        "https://remotes.example/x/",
        "/elsewhere/api/v1/discover/",
    )
    assert (await live.client().get("/remotes/api/status/")).status_code == 404


GARBAGE_BODIES = [
    b"",
    b"null",
    b"[]",
    b"{",
    b'"x"',
    b"\xff\xfe",
    b'{"x": NaN}',
    b"[" * 3000 + b"]" * 3000,
    b'{"public_key": "\\u0000", "uuid": "\\ud800", "encrypted": 7}',
    b'{"uuid": null, "encrypted": null, "output": null, "result": null}',
    b'{"public_key": [], "uuid": {}, "encrypted": [], "output": "x", "result": "y"}',
    b'{"output": "' + b"A" * 3000 + b'", "result": "gAAAAA=="}',
]
GARBAGE_IDS = ["0", "-1", "abc", "1e3", str(2**63), "9" * 40, "%00", "%C3%A9"]


async def test_garbage_never_causes_a_server_error(
    live: Live, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    await add_command(admin, await command_group(admin), "c", "pass")
    client = await new_host(live, admin, tmp_path)
    identities = [
        {},
        {"Authorization": f"Token {client.host_token()}"},
        {"Authorization": f"Token {await registration_token(admin)}"},
        {"Authorization": "Token " + "x" * 2000},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ]
    paths = [f"api/v1/{path}" for path in ("host/register/", "host/verify/", "host/status/")]
    paths += ["api/v1/commands/list/", "api/status/", "api/v1/discover/", "api/status"]
    for kind in ("get", "post"):
        paths += [f"api/v1/commands/{kind}/{i}/" for i in ["1", *GARBAGE_IDS]]
    failures = []
    for headers in identities:
        http = live.client(headers=headers)
        for path in paths:
            for method, body in [("GET", b""), *(("POST", b) for b in GARBAGE_BODIES)]:
                response = await http.request(method, PREFIX + path, content=body)
                try:
                    response.json()
                except ValueError:
                    failures.append(f"{method} {path} {body[:30]!r}: not JSON")
                if response.status_code >= 500:
                    failures.append(f"{method} {path} {body[:30]!r}: {response.status_code}")
    assert not failures, "\n".join(failures)
    assert [t["status"] for t in await command_tasks(admin)] in ([], ["active"])
