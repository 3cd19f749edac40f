"""The remote function of the remote-function peer benchmark (../run-remote.sh).

    python counter_server.py --records N --keys K [--value-size 100] [--port 0]
                             [--stamped [--warmup S]]

Serves `bench/remote-counter` with the official StateFun Python SDK
(apache-flink-statefun 3.3.0, `RequestReplyHandler` on aiohttp, one process, as
examples/python-greeter/functions.py does) at
http://127.0.0.1:<port>/statefun/remote-counter, for statefun-rs and Apache Flink
StateFun 3.3.0 alike. Prints `PORT <n>` and `READY` once it listens (port 0 picks a
free one) and runs until it is killed.

The function keeps a `long` count per id in StateFun state (the runtime owns the
state and sends it with every request) and increments it per message. The server
knows how many messages each id must get (`records / keys`, plus one for the first
`records % keys` ids, ids being the decimal text of `sequence % keys`), so it can
tell when the run is complete and whether it is exact:

* `completed`: ids whose count reached exactly their expected number (a set, so an
  invocation the runtime retried after abandoning a request counts once);
* `overshoot`: invocations that saw a count above the expected one (a duplicated
  message; must stay 0);
* `bad`: messages that are not an `io.statefun.types/string` of `--value-size`
  characters, or ids that are not in 0..keys (must stay 0).

The run is complete when every id has completed; `ok` also needs no overshoot and
nothing bad.

With `--stamped` every message's text starts with its due time (16 decimal digits of
microseconds since the Unix epoch: statefun-rs' generator `stamp: true`, the Flink
peer's `--stamp`), and the function records its own clock minus that time at each
invocation: the end-to-end latency from the source's schedule to the function,
through the runtime, its HTTP client and this server's queue. The stats line then
has `lat_n`, `lat_p50_ms`, `lat_p90_ms`, `lat_p99_ms`, `lat_p999_ms` and `lat_max_ms`
(nearest-rank percentiles; a message without a stamp is `bad`) over the messages due
`--warmup` seconds or more after the first one's due time (default 0: all of them),
and `lat_all_p99_ms`, `lat_all_max_ms` over all of them, start-up included.

Other routes (plain text, one `stats: key=value ...` line):

* `GET /stats`: the counters now.
* `GET /wait/done?timeout=S`: the same, once the run is complete or after S seconds
  (a long poll: how the Flink peer learns that it may stop).
* `POST /watch?pid=P`: the runtime's process (with its descendants: /usr/bin/time's
  child). Its CPU time (/proc/<pid>/stat utime+stime, 10 ms ticks) is read when the
  first message arrives and when the run completes, giving `runtime_cpu_window_s`:
  the runtime's CPU from its first message to its last id complete, without its
  start-up. When `watch` comes after the first message (a fast-starting runtime),
  the window is counted from the process start instead (`cpu_from=start`, which
  counts the start-up against that runtime).

The window (`window_s`) runs from the first invocation of the function to the
moment its last id completed, both taken here, so both runtimes are timed by the
same clock at the same points. `server_cpu_window_s` is this server's CPU over the
same window (its cost depends on how the runtime batches).
"""

import argparse
import asyncio
import os
import time

from aiohttp import web
from statefun import LongType, RequestReplyHandler, StatefulFunctions, ValueSpec

STRING_TYPENAME = "io.statefun.types/string"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of `root` and all its live descendants, in seconds."""
    parent = {}
    cpu = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        fields = raw[raw.rindex(b")") + 2 :].split()
        pid = int(name)
        parent[pid] = int(fields[1])
        cpu[pid] = int(fields[11]) + int(fields[12])
    total = 0
    for pid, ticks in cpu.items():
        p = pid
        while p and p != root:
            p = parent.get(p, 0)
        if p == root:
            total += ticks
    return total / CLK_TCK


def percentile(ordered, q: float) -> float:
    """The nearest-rank q-quantile (0 < q <= 1) of a sorted, non-empty list."""
    rank = max(1, -(-len(ordered) * q // 1))
    return ordered[int(rank) - 1]


class Tally:
    def __init__(
        self, records: int, keys: int, value_size: int, stamped: bool = False, warmup_s: float = 0
    ):
        self.records = records
        self.keys = max(1, keys)
        self.value_size = value_size
        self.base = records // self.keys
        self.extra = records % self.keys
        self.expected_ids = min(self.keys, records)
        self.invocations = 0
        self.completed = set()
        self.overshoot = 0
        self.bad = 0
        self.requests = 0
        self.invoking_requests = 0
        self.max_batch = 0
        self.first_mono = None
        self.first_unix = None
        self.first_server_cpu = None
        self.done_mono = None
        self.done_unix = None
        self.done_server_cpu = None
        self.done_event = asyncio.Event()
        self.watch_pid = None
        self.cpu_from = "none"
        self.runtime_cpu_first = None
        self.runtime_cpu_done = None
        self.stamped = stamped
        self.warmup_us = int(warmup_s * 1e6)
        self.first_stamp = None
        self.latencies_us = []
        self.warmup_latencies_us = []

    def first(self) -> None:
        self.first_mono = time.monotonic()
        self.first_unix = time.time()
        self.first_server_cpu = time.process_time()
        if self.watch_pid is not None:
            self.runtime_cpu_first = tree_cpu_seconds(self.watch_pid)
            self.cpu_from = "first"

    def complete(self) -> None:
        self.done_mono = time.monotonic()
        self.done_unix = time.time()
        self.done_server_cpu = time.process_time()
        if self.watch_pid is not None:
            self.runtime_cpu_done = tree_cpu_seconds(self.watch_pid)
        self.done_event.set()

    def watch(self, pid: int) -> None:
        self.watch_pid = pid
        if self.first_mono is None:
            return  # sampled at the first invocation
        # Too late for the first message: count from the process start (conservative).
        self.runtime_cpu_first = 0.0
        self.cpu_from = "start"
        if self.done_mono is not None:
            self.runtime_cpu_done = tree_cpu_seconds(pid)

    def ok(self) -> bool:
        return (
            len(self.completed) == self.expected_ids
            and self.overshoot == 0
            and self.bad == 0
        )

    def line(self) -> str:
        done = self.done_mono is not None
        fields = [
            ("done", str(done).lower()),
            ("ok", str(done and self.ok()).lower()),
            ("records", self.records),
            ("keys", self.keys),
            ("invocations", self.invocations),
            ("completed", len(self.completed)),
            ("expected_ids", self.expected_ids),
            ("overshoot", self.overshoot),
            ("bad", self.bad),
            ("requests", self.requests),
            ("invoking_requests", self.invoking_requests),
            ("max_batch", self.max_batch),
        ]
        if done:
            window = self.done_mono - self.first_mono
            fields += [
                ("window_s", f"{window:.3f}"),
                ("records_per_s", f"{self.records / window:.0f}" if window > 0 else "NA"),
                ("server_cpu_window_s", f"{self.done_server_cpu - self.first_server_cpu:.3f}"),
            ]
            if self.runtime_cpu_done is not None and self.runtime_cpu_first is not None:
                fields.append(
                    ("runtime_cpu_window_s", f"{self.runtime_cpu_done - self.runtime_cpu_first:.2f}")
                )
            fields.append(("cpu_from", self.cpu_from))
            fields.append(("done_unix_ms", int(self.done_unix * 1000)))
        if self.first_unix is not None:
            fields.append(("first_unix_ms", int(self.first_unix * 1000)))
        if self.stamped and self.latencies_us:
            ordered = sorted(self.latencies_us)
            fields.append(("lat_n", len(ordered)))
            for name, q in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)]:
                fields.append((f"lat_{name}_ms", f"{percentile(ordered, q) / 1000:.3f}"))
            fields.append(("lat_max_ms", f"{ordered[-1] / 1000:.3f}"))
            everything = sorted(self.latencies_us + self.warmup_latencies_us)
            fields.append(("lat_all_p99_ms", f"{percentile(everything, 0.99) / 1000:.3f}"))
            fields.append(("lat_all_max_ms", f"{everything[-1] / 1000:.3f}"))
        fields.append(("server_cpu_total_s", f"{time.process_time():.3f}"))
        return "stats: " + " ".join(f"{k}={v}" for k, v in fields)


def build(tally: Tally) -> web.Application:
    functions = StatefulFunctions()

    @functions.bind(
        typename="bench/remote-counter", specs=[ValueSpec(name="count", type=LongType)]
    )
    def counter(context, message):
        """Reads, increments and writes the id's count; reports completions to the tally."""
        t = tally
        if t.first_mono is None:
            t.first()
        t.invocations += 1
        if message.value_typename() != STRING_TYPENAME:
            t.bad += 1
        else:
            text = message.as_string()
            if len(text) != t.value_size:
                t.bad += 1
            elif t.stamped:
                stamp = text[:16]
                if stamp.isdigit():
                    due = int(stamp)
                    latency = time.time_ns() // 1000 - due
                    if t.first_stamp is None:
                        t.first_stamp = due
                    if due - t.first_stamp >= t.warmup_us:
                        t.latencies_us.append(latency)
                    else:
                        t.warmup_latencies_us.append(latency)
                else:
                    t.bad += 1
        n = (context.storage.count or 0) + 1
        context.storage.count = n
        if n >= t.base:
            ident = context.address.id
            try:
                i = int(ident)
            except ValueError:
                i = -1
            if not 0 <= i < t.keys:
                t.bad += 1
                return
            expected = t.base + (1 if i < t.extra else 0)
            if n == expected:
                if ident not in t.completed:
                    t.completed.add(ident)
                    if len(t.completed) == t.expected_ids and t.done_mono is None:
                        t.complete()
            elif n > expected:
                t.overshoot += 1

    handler = RequestReplyHandler(functions)

    async def invoke(request: web.Request) -> web.Response:
        body = await request.read()
        before = tally.invocations
        result = await handler.handle_async(body)
        tally.requests += 1
        batch = tally.invocations - before
        if batch:
            tally.invoking_requests += 1
            if batch > tally.max_batch:
                tally.max_batch = batch
        return web.Response(body=result, content_type="application/octet-stream")

    async def stats(_request: web.Request) -> web.Response:
        return web.Response(text=tally.line() + "\n")

    async def wait_done(request: web.Request) -> web.Response:
        timeout = float(request.query.get("timeout", "1"))
        try:
            await asyncio.wait_for(tally.done_event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return web.Response(text=tally.line() + "\n")

    async def watch(request: web.Request) -> web.Response:
        tally.watch(int(request.query["pid"]))
        return web.Response(text=f"watching {tally.watch_pid} cpu_from={tally.cpu_from}\n")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(
        [
            web.post("/statefun/{name}", invoke),
            web.get("/stats", stats),
            web.get("/wait/done", wait_done),
            web.post("/watch", watch),
        ]
    )
    return app


async def serve(args) -> None:
    tally = Tally(args.records, args.keys, args.value_size, args.stamped, args.warmup)
    runner = web.AppRunner(build(tally), access_log=None, keepalive_timeout=75.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    print("READY", flush=True)
    await asyncio.Event().wait()  # until killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--stamped",
        action="store_true",
        help="messages start with their due time (16 digits, µs since the epoch): record latencies",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="seconds of due times after the first message whose latencies are only in lat_all_*",
    )
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
