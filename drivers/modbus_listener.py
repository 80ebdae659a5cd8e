"""A pymodbus TCP server's life, shared by the QSE link's server and the simulated devices: listen
(port 0 binds a free one, kept for every restart), stop (the listener and every connection), serve
until cancelled."""

from __future__ import annotations

import abc
import asyncio

from pymodbus.server import ModbusTcpServer


class ModbusListener(abc.ABC):
    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self._port = port
        self._server: ModbusTcpServer | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the configured one before)."""
        return self._port

    @property
    def listening(self) -> bool:
        return self._server is not None

    @abc.abstractmethod
    def _build(self) -> ModbusTcpServer:
        """A new server on (host, port), not yet listening."""

    @abc.abstractmethod
    def _started(self) -> None:
        """Called once listening (a log line)."""

    @abc.abstractmethod
    def _stopped(self) -> None:
        """Called once stopped."""

    async def start(self) -> None:
        """Listen (again) on host:port; after the first start the port is fixed, even if it was 0."""
        if self._server is not None:
            return
        server = self._build()
        await server.serve_forever(background=True)
        sockets = getattr(server.transport, "sockets", None) or []
        if sockets:
            self._port = int(sockets[0].getsockname()[1])
        self._server = server
        self._started()

    async def stop(self) -> None:
        """Close the listener and every open connection."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]  # untyped in pymodbus 3.16
            self._stopped()

    async def serve(self) -> None:
        """Start, then serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
