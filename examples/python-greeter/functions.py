"""The greeter with the official StateFun Python SDK, served for statefun-rs.

    python functions.py [--port 8000] [--server aiohttp|http10|http11|flask|gunicorn|idle-close]

Serves every function at http://127.0.0.1:<port>/statefun/<name>. Prints
`PORT <n>` and `READY` once it listens (port 0 picks a free one). Runs until
stdin closes or it is killed.

`--server` picks the HTTP server the SDK's `RequestReplyHandler` sits behind, as users
deploy it (the runtime must work with each; see remote/tests and docs/REMOTE.md):

- `aiohttp` (default): aiohttp, keep-alive, as the SDK's docs show.
- `http10`: the standard library's `http.server` with HTTP/1.0: one request per connection,
  the response delimited by closing the connection; single-threaded, listen backlog 5.
- `http11`: the same server with `protocol_version = "HTTP/1.1"` (keep-alive).
- `flask`: a Flask app on Werkzeug's server (threaded, HTTP/1.1).
- `gunicorn`: Flask on gunicorn with sync workers (2): `Connection: close` on every response.
- `idle-close`: aiohttp closing connections idle for 1 s, as load balancers do.
"""

import argparse
import asyncio
import socket
import sys
import threading
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


def serve_until_stdin_closes() -> None:
    """Blocks until stdin closes (the test closes it), or forever when run by hand."""
    if sys.stdin.isatty():
        threading.Event().wait()
    else:
        sys.stdin.read()


def announce(port: int) -> None:
    print(f"PORT {port}", flush=True)
    print("READY", flush=True)


async def serve_aiohttp(port: int, keepalive_timeout: float) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes([web.post("/statefun/{name}", handle)])
    runner = web.AppRunner(app, keepalive_timeout=keepalive_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    announce(runner.addresses[0][1])
    await asyncio.get_running_loop().run_in_executor(None, serve_until_stdin_closes)
    await runner.cleanup()


def serve_http_server(port: int, protocol_version: str) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            result = handler.handle_sync(self.rfile.read(length))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if self.protocol_version == "HTTP/1.1":
                self.send_header("Content-Length", str(len(result)))
            self.end_headers()
            self.wfile.write(result)

        def log_message(self, format, *args):
            pass

    Handler.protocol_version = protocol_version
    server = HTTPServer(("127.0.0.1", port), Handler)
    announce(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    serve_until_stdin_closes()


def flask_app():
    from flask import Flask, request

    app = Flask(__name__)

    @app.post("/statefun/<name>")
    def statefun(name):
        result = handler.handle_sync(request.get_data())
        return result, 200, {"Content-Type": "application/octet-stream"}

    return app


def serve_flask(port: int) -> None:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, flask_app(), threaded=True)
    announce(server.server_port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    serve_until_stdin_closes()


def serve_gunicorn(port: int) -> None:
    from gunicorn.app.base import BaseApplication

    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]

    class App(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"127.0.0.1:{port}")
            self.cfg.set("workers", 2)
            self.cfg.set("worker_class", "sync")
            self.cfg.set("loglevel", "warning")
            self.cfg.set("when_ready", lambda _server: announce(port))

        def load(self):
            return flask_app()

    # The arbiter owns the main thread (signals); a watcher ends it when stdin closes.
    if not sys.stdin.isatty():
        def watch():
            sys.stdin.read()
            import os, signal
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=watch, daemon=True).start()
    App().run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--server",
        default="aiohttp",
        choices=["aiohttp", "http10", "http11", "flask", "gunicorn", "idle-close"],
    )
    args = parser.parse_args()
    if args.server == "aiohttp":
        asyncio.run(serve_aiohttp(args.port, keepalive_timeout=75.0))
    elif args.server == "idle-close":
        asyncio.run(serve_aiohttp(args.port, keepalive_timeout=1.0))
    elif args.server == "http10":
        serve_http_server(args.port, "HTTP/1.0")
    elif args.server == "http11":
        serve_http_server(args.port, "HTTP/1.1")
    elif args.server == "flask":
        serve_flask(args.port)
    else:
        serve_gunicorn(args.port)


if __name__ == "__main__":
    main()
