"""ws_client.py PORT: WebSocket checks with a real client (Debian's python3-websockets)
against the app test_ws.c starts. Prints one line per check, "ok DESC" or "not ok DESC"."""
import asyncio
import resource
import sys

import websockets

PORT = int(sys.argv[1])
URL = "ws://127.0.0.1:%d" % PORT


def check(cond, desc):
    print(("ok " if cond else "not ok ") + desc, flush=True)


async def echo():
    async with websockets.connect(URL + "/echo") as ws:
        await ws.send("hello")
        check(await ws.recv() == "hello", "echo: text")
        await ws.send(b"\x00\xffbin")
        check(await ws.recv() == b"\x00\xffbin", "echo: binary")
        big = "é" * 300000                      # 600 KB of UTF-8, several reads
        await ws.send(big)
        check(await ws.recv() == big, "echo: a large message")
        await ws.send(["frag1", "frag2", "frag3"])
        check(await ws.recv() == "frag1frag2frag3", "echo: a fragmented message")
        pong = await ws.ping(b"p")
        await asyncio.wait_for(pong, 5)
        check(True, "ping: answered with a pong")
        await ws.close(1000, "bye")
        check(ws.close_code == 1000, "close handshake: 1000 echoed")


async def too_big():
    try:
        async with websockets.connect(URL + "/echo", max_size=None) as ws:
            await ws.send("y" * 2_000_000)
            await asyncio.wait_for(ws.recv(), 10)
            check(False, "oversized message: closed 1009")
    except websockets.ConnectionClosed as e:
        check(e.rcvd is not None and e.rcvd.code == 1009, "oversized message: closed 1009")


async def server_closes():
    async with websockets.connect(URL + "/bye") as ws:
        msg = await ws.recv()
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as e:
            check(msg == "bye soon" and e.rcvd.code == 4000 and e.rcvd.reason == "done",
                  "ws:close(4000, 'done') reaches the client")


async def chat():
    conns = [await websockets.connect(URL + "/chat") for i in range(8)]
    workers = set()
    for ws in conns:
        workers.add((await asyncio.wait_for(ws.recv(), 10)).split()[1])
    check(workers == {"1", "2"}, "broadcast: the sockets are on both workers (%s)" % sorted(workers))
    await conns[0].send("to everyone")
    got = [await asyncio.wait_for(ws.recv(), 10) for ws in conns]
    check(got == ["to everyone"] * 8, "broadcast: every socket of the channel, on both workers")
    for ws in conns:
        await ws.close()


async def many(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 200)), hard))
    conns = []
    for i in range(n):
        conns.append(await websockets.connect(URL + "/echo", ping_interval=None))
    for i, ws in enumerate(conns):
        await ws.send("m%d" % i)
    got = 0
    for i, ws in enumerate(conns):
        if await asyncio.wait_for(ws.recv(), 20) == "m%d" % i:
            got += 1
    check(got == n, "%d concurrent WebSockets all echo (%d did)" % (n, got))
    for ws in conns:
        await ws.close()


async def main():
    await echo()
    await too_big()
    await server_closes()
    await chat()
    await many(int(sys.argv[2]) if len(sys.argv) > 2 else 1000)

asyncio.run(main())
