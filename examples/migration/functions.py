"""A shopping cart with the official Apache Flink StateFun Python SDK (apache-flink-statefun 3.3).

    python functions.py [--port 8000]

Serves `shop/cart` and `shop/inventory` at http://127.0.0.1:<port>/statefun/<name> with
aiohttp, as the SDK's documentation shows. Prints `PORT <n>` and `READY` once it listens
(`--port 0` picks a free port). Runs until it is stopped. Receipts go to the Kafka topic
named by the environment variable RECEIPTS_TOPIC (default `receipts`).

- `shop/cart` (one instance per user; the Kafka record key is the user id) receives
  `shop/AddToCart` requests from the Kafka ingress, as JSON:
  `{"request_id": "u1-1", "item_id": "apple", "quantity": 2}`. It asks the item's
  `shop/inventory` instance to reserve the quantity, one request at a time (later requests
  wait in its state, so a user's receipts follow the order of their requests), and, when the
  answer comes back, writes a receipt to the `shop/receipts` Kafka egress.
- `shop/inventory` (one instance per item) keeps the item's stock and answers its caller.
"""

import argparse
import asyncio
import os

from aiohttp import web
from statefun import (
    Context,
    IntType,
    Message,
    RequestReplyHandler,
    StatefulFunctions,
    ValueSpec,
    kafka_egress_message,
    make_json_type,
    message_builder,
)

# What producers write to the Kafka topic: the record value is this JSON, as bytes.
ADD_TO_CART = make_json_type(typename="shop/AddToCart")
# Messages between the two functions.
RESERVE = make_json_type(typename="shop/Reserve")
RESERVATION = make_json_type(typename="shop/Reservation")
# What the cart keeps, and what it writes to Kafka.
CART_ITEMS = make_json_type(typename="shop/CartItems")
PENDING = make_json_type(typename="shop/PendingRequests")
RECEIPT = make_json_type(typename="shop/Receipt")

RECEIPTS_TOPIC = os.environ.get("RECEIPTS_TOPIC", "receipts")

# Staples are plentiful; every `limited-*` item has 3 in stock; anything else is unknown
# (no stock).
CATALOG = {"apple": 1_000_000, "bread": 1_000_000, "coffee": 1_000_000, "milk": 1_000_000}
LIMITED_STOCK = 3


def initial_stock(item_id: str) -> int:
    if item_id.startswith("limited-"):
        return LIMITED_STOCK
    return CATALOG.get(item_id, 0)


functions = StatefulFunctions()


def ask_inventory(context: Context, request: dict) -> None:
    context.send(
        message_builder(
            target_typename="shop/inventory",
            target_id=request["item_id"],
            value={"request_id": request["request_id"], "quantity": request["quantity"]},
            value_type=RESERVE,
        )
    )


@functions.bind(
    typename="shop/cart",
    specs=[
        ValueSpec(name="items", type=CART_ITEMS),
        ValueSpec(name="pending", type=PENDING),
        ValueSpec(name="receipts", type=IntType),
    ],
)
async def cart(context: Context, message: Message):
    storage = context.storage
    if message.is_type(ADD_TO_CART):
        request = message.as_type(ADD_TO_CART)
        pending = storage.pending or []
        pending.append(request)
        storage.pending = pending
        if len(pending) == 1:
            ask_inventory(context, request)
    elif message.is_type(RESERVATION):
        answer = message.as_type(RESERVATION)
        pending = storage.pending or []
        if not pending or pending[0]["request_id"] != answer["request_id"]:
            raise ValueError(f"cart {context.address.id}: unexpected reservation {answer}")
        request = pending.pop(0)
        items = storage.items or {}
        if answer["reserved"]:
            items[request["item_id"]] = items.get(request["item_id"], 0) + request["quantity"]
            storage.items = items
        receipt_number = (storage.receipts or 0) + 1
        storage.receipts = receipt_number
        receipt = {
            "user_id": context.address.id,
            "receipt": receipt_number,
            "request_id": request["request_id"],
            "item_id": request["item_id"],
            "quantity": request["quantity"],
            "status": "reserved" if answer["reserved"] else "out-of-stock",
            "cart": items,
        }
        context.send_egress(
            kafka_egress_message(
                typename="shop/receipts",
                topic=RECEIPTS_TOPIC,
                key=context.address.id,
                value=receipt,
                value_type=RECEIPT,
            )
        )
        storage.pending = pending
        if pending:
            ask_inventory(context, pending[0])
    else:
        raise TypeError(f"shop/cart does not take {message.value_typename()}")


@functions.bind(typename="shop/inventory", specs=[ValueSpec(name="stock", type=IntType)])
async def inventory(context: Context, message: Message):
    request = message.as_type(RESERVE)
    stock = context.storage.stock
    if stock is None:
        stock = initial_stock(context.address.id)
    reserved = request["quantity"] <= stock
    if reserved:
        stock -= request["quantity"]
    context.storage.stock = stock
    caller = context.caller
    context.send(
        message_builder(
            target_typename=caller.typename,
            target_id=caller.id,
            value={"request_id": request["request_id"], "reserved": reserved},
            value_type=RESERVATION,
        )
    )


handler = RequestReplyHandler(functions)


async def handle(request: web.Request) -> web.Response:
    response = await handler.handle_async(await request.read())
    return web.Response(body=response, content_type="application/octet-stream")


async def serve(port: int) -> None:
    app = web.Application()
    app.add_routes([web.post("/statefun/{function}", handle)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    print("READY", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
