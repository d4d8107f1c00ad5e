"""The ceiling: bare uvicorn + starlette in one process answering the same trivial reply.

    python bench/baseline.py PORT

The benchmark starts this as a subprocess and loads it with the same client, so every report states the
serving systems' HTTP figures as a fraction of what this machine can do with no serving layer at all:
``/`` for the trivial reply, ``/echo`` for the request body (the systems' ``Echo`` deployment), and the
WebSocket ``/ws/echo`` (the systems' ``WsEcho``).
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("v1")


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        await websocket.send({**message, "type": "websocket.send"})


app = Starlette(routes=[Route("/", hello), Route("/echo", echo, methods=["POST"]), WebSocketRoute("/ws/echo", ws_echo)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
