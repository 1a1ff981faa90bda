#!/usr/bin/env python3
"""Legitimate callbacks under a flood of slow connections (issue 11, items 1 and 7).

Starts `vodhook serve` (the binary given) on 127.0.0.1:0 with a fresh
database in a temporary directory, opens ATTACKERS connections that hold
their slot as long as the server lets them, then sends LEGIT ordinary
callbacks (one every 0.1 s, each on a new connection) and reports how
many were answered 200 and how long each took, connection included.

  contrib/slow-clients.py BINARY head|body ATTACKERS [--cap N] [--legit N]

head: each attacker sends `POST / HTTP/1.1` and one more header line
      every 0.2 s, never finishing its request head (slowloris);
body: each attacker sends a complete head announcing 100,000 bytes,
      then one body byte every 0.2 s.
An attacker that is cut off connects again at once.

The attackers and the daemon share the machine, so run it on an
otherwise quiet host and compare builds of the same profile. Needs an
open-files limit above ATTACKERS + 100 (ulimit -n).
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import tempfile
import threading
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("mode", choices=["head", "body"])
    parser.add_argument("attackers", type=int)
    parser.add_argument("--cap", type=int, help="server.max_connections (default: vodhook's)")
    parser.add_argument("--legit", type=int, default=40)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of attack before the first callback")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="vodhook-slow-")
    config = os.path.join(work, "vodhook.toml")
    with open(config, "w") as f:
        f.write("[server]\nlisten = '127.0.0.1:0'\n")
        if args.cap:
            f.write(f"max_connections = {args.cap}\n")
        f.write("[admin]\nlisten = ''\n")
    daemon = subprocess.Popen(
        [args.binary, "serve", "--config", config, "--db", os.path.join(work, "vodhook.db"), "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = json.loads(daemon.stdout.readline())
    host, port = first["address"].rsplit(":", 1)
    port = int(port)
    threading.Thread(target=lambda: [None for _ in daemon.stdout], daemon=True).start()
    try:
        results = asyncio.run(attack(host, port, args))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    latencies = sorted(r[0] for r in results)
    ok = sum(1 for r in results if r[1] == "200")
    n = len(results)
    print("latencies (s):", [round(r[0], 2) for r in results])
    print(f"mode={args.mode} attackers={args.attackers} cap={args.cap or 'default'}: "
          f"{ok}/{n} answered 200; latency p50 {latencies[n // 2]:.2f} s, "
          f"p90 {latencies[n * 9 // 10]:.2f} s, max {latencies[-1]:.2f} s; "
          f"outcomes {sorted(set(r[1] for r in results))}")


def attackers(host, port, mode, count, opened, stop):
    """Runs in a process of its own, so that the legitimate clients are not
    slowed down by the attackers' event loop."""

    async def attacker():
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port)
                with opened.get_lock():
                    opened.value += 1
                if mode == "head":
                    writer.write(b"POST / HTTP/1.1\r\nhost: x\r\n")
                else:
                    writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n{")
                await writer.drain()
                while not stop.is_set():
                    await asyncio.sleep(0.2)
                    writer.write(b"x-a: b\r\n" if mode == "head" else b" ")
                    await writer.drain()
            except Exception:
                await asyncio.sleep(0.05)

    async def run():
        tasks = [asyncio.create_task(attacker()) for _ in range(count)]
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


async def attack(host, port, args):
    opened = multiprocessing.Value("l", 0)
    stop = multiprocessing.Event()
    flood = multiprocessing.Process(target=attackers, args=(host, port, args.mode, args.attackers, opened, stop))
    flood.start()

    async def legit(n):
        body = json.dumps({"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": [f"legit{n}"]}}).encode()
        start = time.time()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
            writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 30)
            return (time.time() - start, line.split()[1].decode() if line else "closed")
        except Exception as error:
            return (time.time() - start, type(error).__name__)

    await asyncio.sleep(args.warmup)
    print(f"{opened.value} attacker connections opened in {args.warmup} s")
    pending = []
    for n in range(args.legit):
        pending.append(asyncio.create_task(legit(n)))
        await asyncio.sleep(0.1)
    results = [await task for task in pending]
    print(f"{opened.value} attacker connections opened in all")
    stop.set()
    flood.join(30)
    return results


if __name__ == "__main__":
    main()
