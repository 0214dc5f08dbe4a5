"""Whatever a client sends to the Flamenco endpoints, the answer is a 4xx in Flamenco's
shape (a plain-text message), never a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.conftest import Live
from tests.dialects.flamenco_worker import Worker, hex_id
from tests.dialects.test_flamenco import open_registration, submit, worker

BAD_JSON = [b"{", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"a": NaN}', b"[" * 5000 + b"]" * 5000]


def plain(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    assert response.text.strip()


async def test_bad_documents_get_400(live: Live, admin: httpx.AsyncClient) -> None:
    await open_registration(admin)
    me = await worker(live)
    job = await submit(admin)
    task_id = (await me.task())["_id"]
    paths = ["/register-worker", "/sign-on", f"/tasks/{task_id}/update", "/output-produced"]
    for path in paths:
        for body in BAD_JSON:
            plain(await me.send("POST", path, content=body), 400)
    wrong_types = {
        "/register-worker": [{"secret": 5}, {"secret": ""}, {"secret": "s", "nickname": []},
                             {"secret": "s", "supported_task_types": "sleep"},
                             {"secret": "s", "supported_task_types": ["bad name!"]}],
        "/sign-on": [{"nickname": 1}, {"supported_task_types": [1]}],
        f"/tasks/{task_id}/update": [{"task_status": "done"}, {"activity": 5},
                                     {"log": ["a"]}, {"task_progress_percentage": "5"},
                                     {"current_command_idx": True}, {"metrics": []}],
        "/output-produced": [{"paths": "x.png"}, {"paths": [1]}],
    }  # fmt: skip
    for path, docs in wrong_types.items():
        for doc in docs:
            plain(await me.send("POST", path, doc), 400)
    plain(await me.send("POST", "/output-produced"), 400)  # no body at all
    plain(await me.send("POST", "/output-produced", {"paths": []}), 422)
    plain(await me.send("POST", "/output-produced", {"paths": ["", " "]}), 422)
    plain(await me.send("POST", "/ack-status-change/dancing"), 400)
    plain(await me.send("POST", f"/tasks/{task_id}/update", {"activity": "\u0000"}), 400)
    assert (await admin.get(f"/api/v1/tasks/{job['tasks'][0]['id']}")).json()["status"] == "active"


@pytest.mark.parametrize(
    "bad_id",
    [
        "zzz",
        "5c0a" * 6 + "0",
        "ABCDEF" * 4,
        "0" * 24,
        "f" * 24,
        "%00" * 24,
        "1" * 23,
        "-" + "1" * 23,
    ],
)
async def test_bad_ids_are_unknown(live: Live, admin: httpx.AsyncClient, bad_id: str) -> None:
    await open_registration(admin)
    me = await worker(live)
    for method, path in [
        ("POST", f"/tasks/{bad_id}/update"),
        ("POST", f"/tasks/{bad_id}/return"),
        ("GET", f"/may-i-run/{bad_id}"),
        ("GET", f"/logfile/{bad_id}/{bad_id}"),
        ("GET", f"/logfile/{hex_id(1)}/{bad_id}"),
    ]:
        doc = {"activity": ""} if path.endswith("update") else None
        answer = await me.send(method, path, doc)
        assert answer.status_code in (400, 404), (path, answer.status_code, answer.text)
        assert answer.headers["content-type"].startswith("text/plain")


async def test_credentials_are_checked_everywhere(live: Live, admin: httpx.AsyncClient) -> None:
    await open_registration(admin)
    me = await worker(live)
    task = hex_id(1)
    routes = [
        ("POST", "/sign-on"), ("POST", "/sign-off"), ("POST", "/task"), ("GET", "/task"),
        ("POST", f"/tasks/{task}/update"), ("POST", f"/tasks/{task}/return"),
        ("GET", f"/may-i-run/{task}"), ("GET", "/status-change"),
        ("POST", "/ack-status-change/awake"), ("POST", "/output-produced"),
        ("GET", f"/logfile/{task}/{task}"),
    ]  # fmt: skip
    broken = [
        {},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Basic " + "YQ=="},  # no colon
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic " + httpx.BasicAuth("x\x00", "y")._auth_header.split()[1]},
    ]
    for method, path in routes:
        for headers in broken:
            plain(await me.send(method, path, auth=None, headers=headers), 401)
        impostor = httpx.BasicAuth(me.id, "wrong")
        plain(await me.send(method, path, auth=impostor), 401)
    # An admin's credentials are not a worker's.
    await live.add_account("boss", "admin", "boss-secret")  # type: ignore[arg-type]
    plain(await me.send("POST", "/task", auth=httpx.BasicAuth("boss", "boss-secret")), 403)


async def test_oversized_bodies_get_413(live: Live, admin: httpx.AsyncClient) -> None:
    await open_registration(admin)
    me = await worker(live)
    huge = json.dumps({"log": "x" * (live.settings.max_body_bytes + 1)}).encode()
    plain(await me.send("POST", f"/tasks/{hex_id(1)}/update", content=huge), 413)


async def test_an_update_with_a_huge_log_is_split_not_refused(
    live: Live, admin: httpx.AsyncClient
) -> None:
    await open_registration(admin)
    me = await worker(live)
    job = await submit(admin)
    task_id = (await me.task())["_id"]
    lines = "\n".join(f"2026-11-23T00:00:00+00:00: line {n} " + "y" * 200 for n in range(3000))
    assert (await me.update(task_id, log=lines)).status_code == 204
    logfile = await me.send("GET", f"/logfile/{hex_id(job['id'])}/{task_id}")
    assert logfile.text == lines + "\n"


async def test_a_worker_cannot_read_another_worker_s_log(
    live: Live, admin: httpx.AsyncClient
) -> None:
    await open_registration(admin)
    me, other = await worker(live), Worker(live, "other")
    assert (await other.register()).status_code == 200
    job = await submit(admin)
    task_id = (await me.task())["_id"]
    path = f"/logfile/{hex_id(job['id'])}/{task_id}"
    plain(await other.send("GET", path), 404)
    plain(await me.send("GET", f"/logfile/{hex_id(job['id'] + 1)}/{task_id}"), 404)
    assert (await admin.get(path)).status_code == 200
