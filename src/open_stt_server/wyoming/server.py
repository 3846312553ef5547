"""The Wyoming listener beside HTTP, in the same process and event loop as uvicorn, on the same models and
queues: one `WyomingConnection` per client, all sharing one `WyomingDoor`."""

from __future__ import annotations

import logging

from wyoming.server import AsyncTcpServer

from open_stt_server.wyoming.connection import WyomingConnection
from open_stt_server.wyoming.discovery import ZeroconfAnnouncement
from open_stt_server.wyoming.door import WyomingDoor

log = logging.getLogger(__name__)


class AnnouncementFailed(Exception):
    pass


class WyomingListener:
    def __init__(self, door: WyomingDoor, zeroconf_name: str | None = None) -> None:
        self.door = door
        self._server = AsyncTcpServer(door.host, door.port)
        self.zeroconf_name = zeroconf_name
        self.announcement: ZeroconfAnnouncement | None = None

    async def start(self) -> None:
        await self._server.start(lambda reader, writer: WyomingConnection(reader, writer, self.door))
        log.info("Wyoming (Home Assistant) listening on tcp://%s:%d", self.door.host, self.door.port)
        if self.zeroconf_name:
            try:
                announcement = ZeroconfAnnouncement(self.zeroconf_name, self.door.host, self.door.port)
                await announcement.start()
            except Exception as exc:  # a name mDNS cannot carry, no multicast route, ...
                await self._server.stop()
                raise AnnouncementFailed(str(exc) or type(exc).__name__) from exc
            self.announcement = announcement

    async def stop(self) -> None:
        if self.announcement is not None:
            await self.announcement.stop()
        await self._server.stop()  # its connections, then the listening socket
        for connection in list(self.door.connections):
            await connection.stop()
