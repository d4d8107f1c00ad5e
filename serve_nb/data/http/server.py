"""uvicorn's server, observable: the proxy awaits its startup instead of polling ``started``."""

from __future__ import annotations

import asyncio
import socket

import uvicorn


class ObservedServer(uvicorn.Server):
    """``started_event`` is set once uvicorn listens (it stays unset if startup fails)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.started_event = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.started_event.set()
