#!/usr/bin/env python3
"""Interop backend: a Python `websockets` echo server WITH permessage-deflate.

Prints `PORT <n>` on its first stdout line (bound to 127.0.0.1, port chosen by the OS), then
echoes every message. A message starting with `frag:` (text) or b`frag:` (binary) is echoed back
fragmented into three frames. The text message `stats` is answered with JSON: the extensions
this side negotiated and how many received frames had RSV1 set (compressed on the wire).
Exits when stdin closes or after --lifetime seconds (bounded).
"""
import argparse
import asyncio
import json
import sys

from websockets.asyncio.server import serve


def fragments(msg):
    n = max(1, len(msg) // 3)
    return [msg[:n], msg[n : 2 * n], msg[2 * n :]]


async def handler(ws):
    rsv1 = {"frames": 0, "rsv1": 0}
    for ext in ws.protocol.extensions:
        decode = ext.decode

        def counting(frame, *args, _decode=decode, **kwargs):
            rsv1["frames"] += 1
            rsv1["rsv1"] += 1 if frame.rsv1 else 0
            return _decode(frame, *args, **kwargs)

        ext.decode = counting
    async for msg in ws:
        if msg == "stats":
            await ws.send(
                json.dumps(
                    {
                        "extensions": [e.name for e in ws.protocol.extensions],
                        "frames": rsv1["frames"],
                        "rsv1_frames": rsv1["rsv1"],
                        "request_extensions": ws.request.headers.get("Sec-WebSocket-Extensions"),
                    }
                )
            )
        elif (isinstance(msg, str) and msg.startswith("frag:")) or (
            isinstance(msg, bytes) and msg.startswith(b"frag:")
        ):
            await ws.send(fragments(msg))
        else:
            await ws.send(msg)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lifetime", type=float, default=120.0)
    args = p.parse_args()
    async with serve(handler, "127.0.0.1", 0, compression="deflate", max_size=16 << 20) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        loop = asyncio.get_running_loop()
        stdin_closed = loop.run_in_executor(None, sys.stdin.read)
        await asyncio.wait(
            [asyncio.ensure_future(stdin_closed), asyncio.ensure_future(asyncio.sleep(args.lifetime))],
            return_when=asyncio.FIRST_COMPLETED,
        )


if __name__ == "__main__":
    asyncio.run(main())
