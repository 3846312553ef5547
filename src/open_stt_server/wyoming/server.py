"""The Wyoming listener beside HTTP, in the same process and event loop as uvicorn, on the same models and
queues: one `WyomingConnection` per client, all sharing one `WyomingDoor`."""

from __future__ import annotations

import logging

from wyoming.server import AsyncTcpServer

from open_stt_server.wyoming.connection import WyomingConnection
from open_stt_server.wyoming.door import WyomingDoor

log = logging.getLogger(__name__)


class WyomingListener:
    def __init__(self, door: WyomingDoor) -> None:
        self.door = door
        self._server = AsyncTcpServer(door.host, door.port)

    async def start(self) -> None:
        await self._server.start(lambda reader, writer: WyomingConnection(reader, writer, self.door))
        log.info("Wyoming (Home Assistant) listening on tcp://%s:%d", self.door.host, self.door.port)

    async def stop(self) -> None:
        await self._server.stop()  # its connections, then the listening socket
        for connection in list(self.door.connections):
            await connection.stop()
