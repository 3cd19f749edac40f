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
import os
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
    StringType,
    ValueSpec,
    kafka_egress_message,
    make_protobuf_type,
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


def ingress_record_class():
    """The `statefun_rs.v1.IngressRecord` message class, built from its descriptor.

    A user compiles sdk/proto/statefun_rs/v1/ingress_record.proto with protoc; this venv has
    no protoc, so the same file is described here field by field (a field that differed from
    the .proto would decode wrongly and fail the test that reads it).
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="statefun_rs/v1/ingress_record.proto", package="statefun_rs.v1", syntax="proto3"
    )

    def message(name, fields, oneofs=()):
        m = proto.message_type.add(name=name)
        for oneof in oneofs:
            m.oneof_decl.add(name=oneof)
        # proto3 `optional` fields each sit in a synthetic oneof, declared after the real ones.
        for field_name, number, kind, type_name, repeated, optional, oneof in fields:
            f = m.field.add(name=field_name, number=number, type=kind)
            f.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if type_name:
                f.type_name = f".statefun_rs.v1.{type_name}"
            if oneof is not None:
                f.oneof_index = oneof
            if optional:
                f.proto3_optional = True
                f.oneof_index = len(m.oneof_decl)
                m.oneof_decl.add(name=f"_{field_name}")

    S, B, I32, I64, U64, M = F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_MESSAGE
    message(
        "IngressRecord",
        [
            ("ingress", 1, S, None, False, False, None),
            ("value_typename", 2, S, None, False, False, None),
            ("value", 3, B, None, False, False, None),
            ("kafka", 10, M, "KafkaSource", False, False, 0),
            ("kinesis", 11, M, "KinesisSource", False, False, 0),
            ("file", 12, M, "FileSource", False, False, 0),
            ("generator", 13, M, "GeneratorSource", False, False, 0),
        ],
        oneofs=["source"],
    )
    message(
        "KafkaSource",
        [
            ("topic", 1, S, None, False, False, None),
            ("partition", 2, I32, None, False, False, None),
            ("offset", 3, I64, None, False, False, None),
            ("timestamp_ms", 4, I64, None, False, True, None),
            ("headers", 5, M, "Header", True, False, None),
        ],
    )
    message("Header", [("key", 1, S, None, False, False, None), ("value", 2, B, None, False, True, None)])
    message(
        "KinesisSource",
        [
            ("stream", 1, S, None, False, False, None),
            ("shard_id", 2, S, None, False, False, None),
            ("sequence_number", 3, S, None, False, False, None),
            ("approximate_arrival_ms", 4, I64, None, False, True, None),
            ("sub_sequence_number", 5, U64, None, False, True, None),
            ("explicit_hash_key", 6, S, None, False, True, None),
        ],
    )
    message("FileSource", [("path", 1, S, None, False, False, None), ("line", 2, U64, None, False, False, None)])
    message("GeneratorSource", [("sequence", 1, U64, None, False, False, None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("statefun_rs.v1.IngressRecord")
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


# `type.googleapis.com/statefun_rs.v1.IngressRecord`, the type name the runtime gives it.
INGRESS_RECORD_TYPE = make_protobuf_type(ingress_record_class())


def record_value(record) -> str:
    """The wrapped value as text, decoded by its `valueType`."""
    if record.value_typename == StringType.typename:
        return StringType.serializer().deserialize(record.value)
    return record.value.decode("utf-8", "replace")


@functions.bind(typename="example/provenance")
async def provenance(context: Context, message: Message):
    """Says where each record came from: its ingress has `remoteMetadata: wrap`, so the
    message is a `statefun_rs.v1.IngressRecord` carrying the value and its metadata."""
    if not message.is_type(INGRESS_RECORD_TYPE):
        line = f"plain {message.value_typename()}"
    else:
        record = message.as_type(INGRESS_RECORD_TYPE)
        source = record.WhichOneof("source")
        s = getattr(record, source)
        if source == "kafka":
            headers = ",".join(
                f"{h.key}={h.value.decode() if h.HasField('value') else '<null>'}" for h in s.headers
            )
            ts = s.timestamp_ms if s.HasField("timestamp_ms") else "-"
            where = f"kafka {s.topic}/{s.partition}/{s.offset} ts={ts} headers=[{headers}]"
        elif source == "kinesis":
            where = f"kinesis {s.shard_id}/{s.sequence_number} arrived={s.HasField('approximate_arrival_ms')}"
        elif source == "file":
            where = f"file {os.path.basename(s.path)}:{s.line}"
        else:
            where = f"generator {s.sequence}"
        line = f"{record.ingress} {record.value_typename} {record_value(record)!r} {where}"
    context.send_egress(
        kafka_egress_message(typename="example/greets", topic="provenance", key=context.address.id, value=line)
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
