#!/usr/bin/env python3
"""Interop backend for the relay conformance table: an echo server on Python `websockets`.

Built on the library's Sans-I/O `ServerProtocol`, which does the handshake, the framing checks
(reserved bits and opcodes, control frames, masking, fragmentation), Close payload checks
(code, UTF-8 reason: 1007), answers Pings and Closes, and fails the connection with Close
1002 on a protocol error. On top of it this script assembles messages, echoes each complete
one as one frame, and fails an invalid UTF-8 text message with 1007, as the library's own
servers do. Bytes are fed to the parser one at a time and every reply is written before the
next byte is parsed, so frames are answered in order: a message that precedes a Close or a
failure in the same TCP segment is echoed first, as a server reading frame by frame does (the
library's asyncio server answers a Close at once and drops echoes queued behind it).

No compression. Prints `PORT <n>` on its first stdout line (bound to 127.0.0.1, port chosen by
the OS). Exits when stdin closes or after --lifetime seconds (bounded).
"""
import argparse
import asyncio
import sys

from websockets.frames import CloseCode, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol


async def serve_one(reader, writer):
    protocol = ServerProtocol(max_size=16 << 20)
    message = None  # (opcode, bytearray) of the message being assembled

    async def flush():
        for data in protocol.data_to_send():
            if data:
                writer.write(data)
            elif writer.can_write_eof():
                writer.write_eof()
        await writer.drain()

    def on_frame(frame):
        nonlocal message
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            message = (frame.opcode, bytearray(frame.data))
        elif frame.opcode is Opcode.CONT and message is not None:
            message[1].extend(frame.data)
        else:
            return  # Ping, Pong, Close: answered by the library
        if not frame.fin:
            return
        opcode, data = message
        message = None
        if opcode is Opcode.TEXT:
            try:
                bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
                return
            protocol.send_text(bytes(data))
        else:
            protocol.send_binary(bytes(data))

    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                protocol.receive_eof()
                await flush()
                break
            for i in range(len(chunk)):
                protocol.receive_data(chunk[i : i + 1])
                for event in protocol.events_received():
                    if isinstance(event, Request):
                        protocol.send_response(protocol.accept(event))
                    else:
                        on_frame(event)
                await flush()
            if protocol.close_expected():
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lifetime", type=float, default=120.0)
    args = p.parse_args()
    server = await asyncio.start_server(serve_one, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    await asyncio.wait(
        [asyncio.ensure_future(stdin_closed), asyncio.ensure_future(asyncio.sleep(args.lifetime))],
        return_when=asyncio.FIRST_COMPLETED,
    )
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
