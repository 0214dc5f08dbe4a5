"""The framing shared by server and agent: arrays of messages and the `Writer` that makes
them."""

from __future__ import annotations

import asyncio
import json

import pytest

from taskfleet.agent import protocol as wire


def test_an_array_decodes_to_its_frames_in_order() -> None:
    texts = [wire.request("a1", "ping", {}), wire.result("s1", {"ok": 1}), wire.fatal("bye")]
    frames = wire.decode("[" + ",".join(texts) + "]")
    assert frames == [
        wire.Request("a1", "ping", {}),
        wire.Response("s1", result={"ok": 1}),
        wire.Fatal("bye"),
    ]
    assert wire.decode(texts[0]) == frames[:1]


@pytest.mark.parametrize("data", ["[]", "[1]", '[{"id": "1", "version": "v1"}]', "[[]]", "3"])
def test_a_bad_array_is_a_protocol_error(data: str) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.decode(data)


class Peer:
    """The other end of a socket: what it received, message by message."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.received: list[str] = []
        self.fail_after = fail_after

    async def send(self, text: str) -> None:
        if self.fail_after is not None and len(self.received) >= self.fail_after:
            raise ConnectionResetError("gone")
        await asyncio.sleep(0)
        self.received.append(text)


async def test_messages_of_one_loop_iteration_travel_together() -> None:
    peer = Peer()
    writer = wire.Writer(peer.send)
    writer.batch = True
    for n in range(3):
        writer.put(wire.request(f"s{n}", "ping", {}))
    await writer.flush()
    writer.put(wire.request("s3", "ping", {}))
    await writer.flush()
    assert [len(wire.decode(m)) for m in peer.received] == [3, 1]
    assert json.loads(peer.received[1])["id"] == "s3"  # one message alone is not an array


async def test_a_peer_that_reads_no_arrays_gets_one_message_at_a_time() -> None:
    peer = Peer()
    writer = wire.Writer(peer.send)
    for n in range(3):
        writer.put(wire.request(f"s{n}", "ping", {}))
    await writer.flush()
    assert [json.loads(m)["id"] for m in peer.received] == ["s0", "s1", "s2"]


async def test_an_array_stays_within_the_peers_size_limit() -> None:
    peer = Peer()
    writer = wire.Writer(peer.send, limit=4000)
    writer.batch = True
    texts = [wire.request(f"s{n}", "log", {"text": "x" * 300}) for n in range(10)]
    for text in texts:
        writer.put(text)
    await writer.flush()
    assert len(peer.received) > 1
    assert all(len(m.encode()) <= 4000 for m in peer.received)
    frames = [f for m in peer.received for f in wire.decode(m)]
    assert [f.id for f in frames if isinstance(f, wire.Request)] == [f"s{n}" for n in range(10)]


async def test_a_broken_connection_is_raised_by_the_next_put() -> None:
    writer = wire.Writer(Peer(fail_after=0).send)
    writer.put(wire.request("s1", "ping", {}))
    with pytest.raises(ConnectionResetError):
        await writer.flush()
    with pytest.raises(ConnectionResetError):
        writer.put(wire.request("s2", "ping", {}))
