#!/usr/bin/env python3
"""Interop client: a Python `websockets` client WITH permessage-deflate.

Usage: deflate_client.py ws://127.0.0.1:PORT/path
Checks, end to end (through wsedge or directly against deflate_server.py):
  - permessage-deflate was negotiated and the client sees it in the 101 response;
  - text and binary messages (compressible and incompressible) echo back unchanged;
  - a fragmented text and a fragmented binary message echo back (and fragmented replies arrive);
  - the frames received had RSV1 set (compressed), and the backend saw RSV1 frames too.
Prints one JSON summary line; exits non-zero on the first failure.
"""
import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


async def main(url):
    received = {"frames": 0, "rsv1": 0}
    async with connect(url, compression="deflate", max_size=16 << 20, open_timeout=10) as ws:
        header = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        if "permessage-deflate" not in header:
            fail(f"101 response has no permessage-deflate: {header!r}")
        names = [e.name for e in ws.protocol.extensions]
        if names != ["permessage-deflate"]:
            fail(f"negotiated extensions {names}")
        ext = ws.protocol.extensions[0]
        decode = ext.decode

        def counting(frame, *args, **kwargs):
            received["frames"] += 1
            received["rsv1"] += 1 if frame.rsv1 else 0
            return decode(frame, *args, **kwargs)

        ext.decode = counting

        cases = [
            "hello " * 200,
            "ünïcødé ✓ " * 50,
            b"\x00\x01\x02binary" * 300,
            os.urandom(20000),
            "x",
            b"",
        ]
        for msg in cases:
            await ws.send(msg)
            got = await asyncio.wait_for(ws.recv(), 10)
            if got != msg:
                fail(f"echo mismatch for {type(msg).__name__} of {len(msg)}")
        # Fragmented messages both ways: the client sends fragments; the server answers in fragments.
        for msg in ["frag:" + "text fragment " * 100, b"frag:" + b"binary fragment " * 100]:
            parts = [msg[:10], msg[10:200], msg[200:]]
            await ws.send(parts)
            got = await asyncio.wait_for(ws.recv(), 10)
            if got != msg:
                fail(f"fragmented echo mismatch for {type(msg).__name__}")
        await ws.send("stats")
        stats = json.loads(await asyncio.wait_for(ws.recv(), 10))
    if stats.get("extensions") != ["permessage-deflate"]:
        fail(f"backend negotiated {stats.get('extensions')}")
    if stats.get("rsv1_frames", 0) == 0:
        fail(f"backend saw no compressed frame: {stats}")
    if received["rsv1"] == 0:
        fail(f"client saw no compressed frame: {received}")
    print(
        json.dumps(
            {
                "ok": True,
                "extension_header": header,
                "client_frames": received["frames"],
                "client_rsv1_frames": received["rsv1"],
                "backend": stats,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail("usage: deflate_client.py ws://HOST:PORT/PATH")
    asyncio.run(asyncio.wait_for(main(sys.argv[1]), 60))
