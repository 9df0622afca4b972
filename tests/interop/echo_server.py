#!/usr/bin/env python3
"""Interop backend for the relay conformance table: a plain Python `websockets` echo server.

No compression. Echoes every complete message as one message and leaves everything else to
the library: it answers Pings, fails the connection with Close 1007 on invalid UTF-8 and 1002
on a protocol error, and answers a Close with the same code, as a correct server does.
Prints `PORT <n>` on its first stdout line (bound to 127.0.0.1, port chosen by the OS).
Exits when stdin closes or after --lifetime seconds (bounded).
"""
import argparse
import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def handler(ws):
    try:
        async for msg in ws:
            await ws.send(msg)
    except ConnectionClosed:
        pass


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lifetime", type=float, default=120.0)
    args = p.parse_args()
    async with serve(
        handler, "127.0.0.1", 0, compression=None, max_size=16 << 20, close_timeout=2
    ) as server:
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
