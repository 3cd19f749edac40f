"""The greeter with the official StateFun Python SDK, served for statefun-rs.

    python functions.py [--port 8000]

Serves every function at http://127.0.0.1:<port>/statefun/<name>. Prints
`PORT <n>` and `READY` once it listens (port 0 picks a free one). Runs until
stdin closes or it is killed.
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
    ValueSpec,
    kafka_egress_message,
    message_builder,
)

functions = StatefulFunctions()


@functions.bind(typename="example/greeter", specs=[ValueSpec(name="seen", type=IntType)])
async def greeter(context: Context, message: Message):
    """Counts how often each name was seen and sends a greeting to the egress."""
    name = message.as_string()
    seen = (context.storage.seen or 0) + 1
    context.storage.seen = seen
    if seen == 1:
        greeting = f"Hello {name}!"
    else:
        greeting = f"Hello {name}! I've seen you {seen} times."
    context.send_egress(
        kafka_egress_message(typename="example/greets", topic="greetings", key=name, value=greeting)
    )


@functions.bind(
    typename="example/echo",
    specs=[ValueSpec(name="calls", type=IntType, expire_after_call=timedelta(minutes=10))],
)
async def echo(context: Context, message: Message):
    """Answers its caller (a Rust function, in the mixed test) with a numbered echo,
    and schedules a delayed reminder that it cancels right away."""
    calls = (context.storage.calls or 0) + 1
    context.storage.calls = calls
    token = f"reminder-{context.address.id}-{calls}"
    context.send_after(
        timedelta(seconds=30),
        message_builder(target_typename="example/greeter", target_id="never", str_value="never"),
        cancellation_token=token,
    )
    context.cancel_delayed_message(token)
    if context.caller is not None:
        context.send(
            message_builder(
                target_typename=context.caller.typename,
                target_id=context.caller.id,
                str_value=f"echo {calls}: {message.as_string()}",
            )
        )


@functions.bind(typename="example/reminder")
async def reminder(context: Context, message: Message):
    """On `start`: rings itself 300 ms later, and schedules a second message it
    cancels at once (which must never arrive). On `ring`/`cancelled`: reports."""
    text = message.as_string()
    if text == "start":
        me = context.address
        context.send_after(
            timedelta(milliseconds=300),
            message_builder(target_typename=me.typename, target_id=me.id, str_value="ring"),
        )
        token = f"doomed-{me.id}"
        context.send_after(
            timedelta(milliseconds=100),
            message_builder(target_typename=me.typename, target_id=me.id, str_value="cancelled"),
            cancellation_token=token,
        )
        context.cancel_delayed_message(token)
    else:
        context.send_egress(
            kafka_egress_message(typename="example/greets", topic="reminders", key=context.address.id, value=text)
        )


handler = RequestReplyHandler(functions)


async def handle(request: web.Request) -> web.Response:
    body = await request.read()
    result = await handler.handle_async(body)
    return web.Response(body=result, content_type="application/octet-stream")


async def main(port: int) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes([web.post("/statefun/{name}", handle)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    # Serve until stdin closes (the test closes it) — or forever when run by hand.
    if sys.stdin.isatty():
        await asyncio.Event().wait()
    else:
        await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


if __name__ == "__main__":
    port = int(sys.argv[2]) if len(sys.argv) == 3 and sys.argv[1] == "--port" else 8000
    asyncio.run(main(port))
