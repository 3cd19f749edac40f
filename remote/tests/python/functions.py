"""Remote functions written with the official StateFun Python SDK (3.3.0),
served by the SDK's RequestReplyHandler over aiohttp, for the interop tests in
remote/tests/python_sdk.rs.

Usage: python functions.py [--unix SOCKET_PATH]

Listens on 127.0.0.1 at a free port and prints `PORT <n>` (then, with --unix,
also serves on the Unix socket and prints `UNIX <path>`), then `READY`.
"""

import asyncio
import sys
from datetime import timedelta

from aiohttp import web
from statefun import (
    Context,
    IntType,
    Message,
    RequestReplyHandler,
    StatefulFunctions,
    StringType,
    ValueSpec,
    kafka_egress_message,
    kinesis_egress_message,
    message_builder,
)

functions = StatefulFunctions()


@functions.bind(typename="example/greeter", specs=[ValueSpec(name="seen", type=IntType)])
async def greeter(context: Context, message: Message):
    name = message.as_string()
    if name == "reset":
        del context.storage.seen
        return
    seen = (context.storage.seen or 0) + 1
    context.storage.seen = seen
    caller = context.caller
    sender = f"{caller.namespace}/{caller.name}/{caller.id}" if caller else "ingress"
    context.send(
        message_builder(
            target_typename="example/out",
            target_id=name,
            str_value=f"Hello {name} #{seen} from {sender}",
        )
    )


@functions.bind(typename="example/delayed")
async def delayed(context: Context, message: Message):
    token = "reminder-" + context.address.id
    context.send_after(
        timedelta(milliseconds=1500),
        message_builder(target_typename="example/out", target_id="later", str_value="kept"),
    )
    context.send_after(
        timedelta(seconds=60),
        message_builder(target_typename="example/out", target_id="never", str_value="cancelled"),
        cancellation_token=token,
    )
    context.cancel_delayed_message(token)


@functions.bind(
    typename="example/expiring",
    specs=[
        ValueSpec(name="visits", type=IntType, expire_after_call=timedelta(minutes=5)),
        ValueSpec(name="last", type=StringType, expire_after_write=timedelta(seconds=30)),
    ],
)
async def expiring(context: Context, message: Message):
    context.storage.visits = (context.storage.visits or 0) + 1
    context.storage.last = message.as_string()


@functions.bind(typename="example/egress")
async def egress(context: Context, message: Message):
    name = message.as_string()
    context.send_egress(
        kafka_egress_message(
            typename="example/kafka-out", topic="greetings", key=context.address.id, value="hello " + name
        )
    )
    context.send_egress(
        kinesis_egress_message(
            typename="example/kinesis-out",
            stream="greetings-stream",
            partition_key=context.address.id,
            value="hi " + name,
            explicit_hash_key="1234",
        )
    )


handler = RequestReplyHandler(functions)


async def handle(request: web.Request) -> web.Response:
    body = await request.read()
    result = await handler.handle_async(body)
    return web.Response(body=result, content_type="application/octet-stream")


async def main() -> None:
    app = web.Application()
    app.add_routes([web.post("/statefun/{name}", handle)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    if len(sys.argv) == 3 and sys.argv[1] == "--unix":
        unix = web.UnixSite(runner, sys.argv[2])
        await unix.start()
        print(f"UNIX {sys.argv[2]}", flush=True)
    print("READY", flush=True)
    # Serve until the test closes our stdin (or kills us).
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
