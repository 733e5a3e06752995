"""A TCP proxy on loopback that can pass traffic, refuse connections, or stall them: an S3 outage on demand."""

import asyncio
import threading

from stream.devstack.services import free_port


class FaultProxy:
    """``mode`` is ``pass``, ``refuse`` (close every new connection at once) or ``stall`` (read, never answer)."""

    def __init__(self, target_port: int, mode: str = "pass"):
        self.port, self.target_port, self.mode = free_port(), target_port, mode
        self.connections = {"pass": 0, "refuse": 0, "stall": 0}
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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        self.connections[mode] += 1
        if mode == "refuse":
            writer.transport.abort()   # a reset, as from a failing load balancer
            return
        if mode == "stall":
            try:
                while await reader.read(65536):
                    pass
            finally:
                writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            self._loop.stop()
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(10)
