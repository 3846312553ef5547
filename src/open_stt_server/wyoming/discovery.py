"""Zeroconf (mDNS) discovery of the Wyoming port, as Home Assistant looks for it: a `_wyoming._tcp.local.` service
under a name, pointing at the address and port the listener serves. Home Assistant then offers the server on its
Integrations page without the user typing a host."""

from __future__ import annotations

import logging
import socket

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

log = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."
MDNS_GROUP = "224.0.0.251"


def announced_address(host: str) -> str:
    """The IPv4 address to announce for a listener bound to `host`: the host itself, or, bound to every address,
    the one this machine reaches the mDNS group from."""
    if host not in ("", "0.0.0.0", "::"):
        return socket.gethostbyname(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((MDNS_GROUP, 5353))  # UDP: nothing is sent, the route picks the interface
        return probe.getsockname()[0]


class ZeroconfAnnouncement:
    def __init__(self, name: str, host: str, port: int) -> None:
        self.address = announced_address(host)
        self.info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(self.address)],
            port=port,
            properties={"server": "open-stt-server"},
        )
        self._zeroconf: AsyncZeroconf | None = None

    async def start(self) -> None:
        self._zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
        await self._zeroconf.async_register_service(self.info)
        log.info("Wyoming announced by Zeroconf as %r at %s:%d", self.info.name, self.address, self.info.port)

    async def stop(self) -> None:
        if self._zeroconf is not None:
            await self._zeroconf.async_unregister_service(self.info)  # Home Assistant hears it go
            await self._zeroconf.async_close()
            self._zeroconf = None
