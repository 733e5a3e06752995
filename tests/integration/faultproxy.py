"""A TCP proxy on loopback that can pass traffic, refuse connections, or stall them: an S3 outage on demand."""

import asyncio
import threading

from stream.devstack.services import free_port


class FaultProxy:
    """``mode`` is ``pass``, ``refuse`` (reset every new connection at once), ``stall`` (read, never answer) or
    ``reset`` (pass ``reset_after`` bytes of the request, then reset the connection: an upload cut in the middle).

    The mode applies to new connections; ``set`` also cuts the connections open at the time, as a network
    failure would, so that a client's pooled connection cannot outlive the outage.
    """

    def __init__(self, target_port: int, mode: str = "pass", reset_after: int = 1 << 20):
        self.port, self.target_port, self.mode, self.reset_after = free_port(), target_port, mode, reset_after
        self.connections = {"pass": 0, "refuse": 0, "stall": 0, "reset": 0}
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    def set(self, mode: str, cut: bool = True) -> None:
        """Switch the mode, and (``cut``) reset every connection open now."""
        async def switch() -> None:
            self.mode = mode
            if cut:
                for w in list(self._open):
                    w.transport.abort()
                self._open.clear()
        asyncio.run_coroutine_threadsafe(switch(), self._loop).result(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        self.connections[mode] += 1
        if mode == "refuse":
            writer.transport.abort()   # a reset, as from a failing load balancer
            return
        self._open.add(writer)
        if mode == "stall":
            try:
                while await reader.read(65536):
                    pass
            except ConnectionError:
                pass
            finally:
                self._open.discard(writer)
                writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        budget = [self.reset_after if mode == "reset" else -1]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, counted: bool) -> None:
            try:
                while data := await src.read(65536):
                    if counted and budget[0] >= 0:
                        budget[0] -= len(data)
                        if budget[0] < 0:   # the request is cut here
                            writer.transport.abort()
                            up_writer.transport.abort()
                            return
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()
        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        finally:
            self._open.discard(writer)

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            self._loop.stop()
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(10)
