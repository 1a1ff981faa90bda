#!/usr/bin/env python3
"""Per-event cost of large snapshot events for one file (issue 11, item 4).

Starts `vodhook serve` (the binary given) on 127.0.0.1:0 with a fresh
database in a temporary directory, then posts EVENTS
`CreateSnapshotByTimeOffsetComplete` events of URLS new snapshot URLs
each, all for one FileId, one after the other, while small callbacks
(`FileDeleted` of other files) arrive every 50 ms on their own
connections. Reports the time of each large event (POST to 200, so
parse, fold into the file's state and commit), the small callbacks'
latency while the load ran, and the size of the file's stored state
document at the end.

  contrib/snapshot-load.py BINARY [--events 40] [--urls 8000]

Before the state was bounded (5b7b478) each event rewrote a document
holding every URL so far, so the time per event grew with the file's
history; now it should stay flat.
"""

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request


def post(url, body, timeout=600):
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()
        status = response.status
    return time.perf_counter() - start, status


def snapshots(file_id, task, count):
    infos = [{"TimeOffset": i * 1000, "Url": f"https://x/{file_id}/t{task}/{i}.jpg", "ErrCode": 0}
             for i in range(count)]
    return json.dumps({
        "EventType": "CreateSnapshotByTimeOffsetComplete",
        "SnapshotByTimeOffsetCompleteEvent": {
            "TaskId": f"snap-{task}", "FileId": file_id, "Definition": 10,
            "SnapshotInfoSet": infos,
        },
    }).encode()


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--urls", type=int, default=8000)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="vodhook-snapshots-")
    db = os.path.join(work, "vodhook.db")
    config = os.path.join(work, "vodhook.toml")
    with open(config, "w") as f:
        # Bodies of 8,000 URLs are about 600 KB.
        f.write("[server]\nlisten = '127.0.0.1:0'\nmax_body_bytes = 16777216\n[admin]\nlisten = ''\n")
    daemon = subprocess.Popen(
        [args.binary, "serve", "--config", config, "--db", db, "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = json.loads(daemon.stdout.readline())["url"]
    threading.Thread(target=lambda: [None for _ in daemon.stdout], daemon=True).start()

    small = []
    done = threading.Event()

    def small_callbacks():
        n = 0
        while not done.is_set():
            body = json.dumps({"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": [f"other{n}"]}}).encode()
            elapsed, status = post(url, body)
            small.append((elapsed, status))
            n += 1
            time.sleep(0.05)

    try:
        bodies = [snapshots("big", task, args.urls) for task in range(args.events)]
        side = threading.Thread(target=small_callbacks)
        side.start()
        times = []
        for task, body in enumerate(bodies):
            elapsed, status = post(url, body)
            assert status == 200, status
            times.append(elapsed)
            print(f"event {task + 1:2}: {elapsed * 1000:8.1f} ms")
        done.set()
        side.join()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    with sqlite3.connect(db) as connection:
        (size,) = connection.execute("SELECT length(state) FROM files WHERE file_id = 'big'").fetchone()
    latencies = [elapsed for elapsed, _ in small]
    statuses = sorted({status for _, status in small})
    print(f"{args.events} events x {args.urls} URLs ({len(bodies[0]) / 1e6:.2f} MB each): "
          f"per event first {times[0] * 1000:.0f} ms, median {statistics.median(times) * 1000:.0f} ms, "
          f"last {times[-1] * 1000:.0f} ms, max {max(times) * 1000:.0f} ms; "
          f"state document {size / 1000:.1f} kB")
    print(f"{len(small)} small callbacks meanwhile (statuses {statuses}): "
          f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
