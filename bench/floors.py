"""What grpc-python itself costs here, with handlers that do nothing: the floors our calls
are measured against.

- Bulk: 64 MB (1e6x16 float32) from a client to a grpc.aio server over loopback, the
  handler answering 4 MB (1e6 int32 labels), by a unary call of one message and by a
  stream of chunks of several sizes. The floor is the fastest of these. Beside it, for an
  upload to fit: the same stream of 2 MiB chunks to a handler that keeps the rows, copying
  each chunk into one new 64 MB array, as any server that fits them must hold them.
- Small calls: a unary handler that answers 8 bytes, driven by h2load with the same
  body our small Predict gets; the server's CPU seconds per 1,000 calls.
- Acked streams: the bidi handler a stream of batches needs at least, answering each
  message with a small ack, fed by grpc-python's sync client with a window of messages
  awaiting their acks, as the SDK's MiniBatchStream sends (bench.streaming).
- Learning and predicting streams: the same server, with the least a server of our design
  does on top, our kernels on a worker thread (bench.floor_work).

`python -m bench.floors` prints them alone (part of `make bench`); bench.system measures
SDK Predict and the Fit upload against the bulk floor, its ways of sending taking turns
with the SDK's calls.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from . import floor_work
from .common import median_time, time_producers

BULK_BYTES = 1_000_000 * 16 * 4
ANSWER_BYTES = 1_000_000 * 4
CHUNKS = (1 << 20, 2 << 20, 4 << 20)
_LIMIT = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
UNARY = "/floor.Floor/Unary"
STREAM = "/floor.Floor/Stream"
KEEP = "/floor.Floor/Keep"
KEPT_CHUNK = 2 << 20
SMALL = "/floor.Floor/Small"
ACKS = "/floor.Floor/Acks"
# About the size of a MiniBatchAck with its numbers set.
ACK_BYTES = 48
# How long an acked stream waits for an ack before it ends its call short.
ACK_WAIT_S = 30.0


async def _serve(port_file: str) -> None:
    """A grpc.aio server whose handlers take raw bytes and answer at once."""
    answer, small = bytes(ANSWER_BYTES), bytes(8)

    async def unary(request: bytes, context: object) -> bytes:
        return answer

    async def stream(requests: object, context: object) -> bytes:
        async for _ in requests:  # type: ignore[attr-defined]
            pass
        return answer

    async def keep(requests: object, context: object) -> bytes:  # of up to BULK_BYTES
        import numpy as np

        kept, at = np.empty(BULK_BYTES, dtype=np.uint8), 0
        async for chunk in requests:  # type: ignore[attr-defined]
            kept[at : at + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            at += len(chunk)
        return answer

    async def tiny(request: bytes, context: object) -> bytes:
        return small

    async def acks(requests: object, context: object) -> AsyncIterator[bytes]:
        ack = bytes(ACK_BYTES)
        async for _ in requests:  # type: ignore[attr-defined]
            yield ack

    handlers = grpc.method_handlers_generic_handler("floor.Floor", {
        **floor_work.handlers(bytes(ACK_BYTES)),
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.stream_unary_rpc_method_handler(stream),
        "Keep": grpc.stream_unary_rpc_method_handler(keep),
        "Small": grpc.unary_unary_rpc_method_handler(tiny),
        "Acks": grpc.stream_stream_rpc_method_handler(acks),
    })
    server = grpc.aio.server(options=_LIMIT)
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    with open(port_file + ".tmp", "w") as out:
        out.write(str(port))
    os.rename(port_file + ".tmp", port_file)
    await server.wait_for_termination()


@contextmanager
def floor_server(scratch: str) -> Iterator[tuple[str, int]]:
    """The trivial server in a process of its own; yields its address and pid."""
    port_file = os.path.join(scratch, "floor-port")
    process = subprocess.Popen([sys.executable, "-m", "bench.floors", "--serve", port_file])
    try:
        for _ in range(600):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the floor server did not start")
        with open(port_file) as found:
            yield f"127.0.0.1:{found.read()}", process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


KEPT_WAY = "stream of 2 MiB chunks, rows kept"


@contextmanager
def bulk_ways(
    address: str, nbytes: int = BULK_BYTES, *, keep: bool = False
) -> Iterator[dict[str, Callable[[], object]]]:
    """Each way of sending ``nbytes`` (64 MB) to the trivial server and getting its answer,
    as a call to time: alone (bulk_floor), or taking turns with the calls measured against
    it, so that the machine's noise meets both alike. With ``keep``, KEPT_WAY too: not one
    of the floor's ways, but the floor of an upload whose rows the server holds."""
    payload = os.urandom(nbytes)
    view = memoryview(payload)

    def chunks(size: int) -> Iterator[bytes]:
        for start in range(0, nbytes, size):
            yield bytes(view[start:start + size])

    with grpc.insecure_channel(address, options=_LIMIT) as channel:
        unary = channel.unary_unary(UNARY)
        stream = channel.stream_unary(STREAM)
        ways: dict[str, Callable[[], object]] = {"unary, one message": lambda: unary(payload)}
        for chunk in CHUNKS:
            ways[f"stream of {chunk >> 20} MiB chunks"] = lambda size=chunk: stream(chunks(size))
        if keep:
            kept = channel.stream_unary(KEEP)
            ways[KEPT_WAY] = lambda: kept(chunks(KEPT_CHUNK))
        yield ways


@contextmanager
def acked_streams(address: str, method_name: str = ACKS) -> Iterator[Callable[..., float]]:
    """Sends each producer's messages (a list per producer, each in a thread of its own and a
    call of its own) to the acking handler (or ``method_name``'s), with at most ``window``
    awaiting their ack, as a call to time. It returns the seconds from when every producer
    has opened its call until the last has every ack, the span bench.streaming times of the
    SDK's producers. ``opening``, when given, goes first on every call and is not acked (the
    open message of our StreamMiniBatch)."""
    with grpc.insecure_channel(address, options=_LIMIT) as channel:
        method = channel.stream_stream(method_name)

        def send(messages: list[list[bytes]], window: int, opening: bytes | None = None) -> float:
            opened = threading.Barrier(len(messages) + 1)
            acked = [0] * len(messages)

            def produce(index: int) -> None:
                room = threading.Semaphore(window)

                def requests() -> Iterator[bytes]:
                    opened.wait()
                    if opening is not None:
                        yield opening
                    for message in messages[index]:
                        if not room.acquire(timeout=ACK_WAIT_S):  # a handler that stopped acking
                            return  # ends the call short: the count of acks below says so
                        yield message

                for _ in method(requests()):
                    room.release()
                    acked[index] += 1

            seconds = time_producers(produce, len(messages), opened)
            if acked != [len(mine) for mine in messages]:
                raise RuntimeError(f"the handler answered {acked} of {[len(m) for m in messages]} messages")
            return seconds

        yield send


def bulk_floor(address: str, repeats: int = 5, nbytes: int = BULK_BYTES) -> dict[str, float]:
    """Seconds to send ``nbytes`` (64 MB) and get the answer back, by each way of sending."""
    with bulk_ways(address, nbytes) as ways:
        return {way: median_time(send, repeats) for way, send in ways.items()}


def small_call_floor(address: str, pid: int, body_file: str, cpu_seconds: object) -> tuple[float, float]:
    """Requests a second and the server's CPU seconds per 1,000 calls of the trivial unary
    handler under h2load (see bench.replicas for the load's shape)."""
    from .replicas import CONNECTIONS, LOAD_SECONDS, STREAMS_PER_CONNECTION

    before = cpu_seconds(pid)  # type: ignore[operator]
    done = subprocess.run(
        ["h2load", "-c", str(CONNECTIONS), "-m", str(STREAMS_PER_CONNECTION), "-D", f"{LOAD_SECONDS:g}",
         "-d", body_file, "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{address}{SMALL}"],
        capture_output=True, text=True, timeout=LOAD_SECONDS * 6,
    )
    cpu = cpu_seconds(pid) - before  # type: ignore[operator]
    succeeded = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", done.stdout)
    speed = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", done.stdout)
    if succeeded is None or speed is None:
        raise RuntimeError(f"h2load said:\n{done.stdout}\n{done.stderr}")
    return float(speed.group(2)), 1000 * cpu / max(int(succeeded.group(1)), 1)


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def small_calls() -> tuple[list[str], dict[str, float]]:
    """Server CPU per small Predict (8x16 float32, k=16) under h2load, against the trivial
    handler's, taking turns, median of ROUNDS rounds each."""
    import numpy as np

    from centroidal.client import Client

    from .replicas import ROUNDS, grpc_body, h2load, serving

    if shutil.which("h2load") is None:
        return ["  (CPU per small call skipped: h2load, from Debian's nghttp2-client, is needed)"], {}
    with tempfile.TemporaryDirectory() as scratch, floor_server(scratch) as (address, pid), serving(1) as ours:
        with Client(ours.target) as client:
            client.fit("small", np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32), 16, seed=0)
        body = os.path.join(scratch, "predict.grpc")
        Path(body).write_bytes(grpc_body("small"))
        floor_rounds, our_rounds = [], []
        for _ in range(ROUNDS):
            floor_rounds.append(small_call_floor(address, pid, body, process_cpu_seconds))
            rate, _, cpu, failed = h2load([ours], Path(body), Path(scratch))
            if failed:
                raise RuntimeError(f"{failed} small Predicts failed under h2load")
            our_rounds.append((rate, cpu))
    floor_rate, floor_cpu = (float(np.median(column)) for column in zip(*floor_rounds))
    rate, cpu = (float(np.median(column)) for column in zip(*our_rounds))
    lines = [
        f"server CPU per call under h2load (64 streams, median of {ROUNDS} rounds, taking turns):",
        f"  small Predict 8x16 k=16   {cpu:6.3f} CPU s per 1,000   {rate:7.0f} req/s",
        f"  trivial grpc.aio handler  {floor_cpu:6.3f} CPU s per 1,000   {floor_rate:7.0f} req/s",
        f"  ratio {cpu / floor_cpu:.2f} (target <= 1.5)",
    ]
    return lines, {"cpu_per_1000_predicts_s": cpu, "cpu_per_1000_floor_s": floor_cpu,
                   "cpu_per_call_over_floor": cpu / floor_cpu}


def run() -> tuple[list[str], dict[str, float]]:
    with tempfile.TemporaryDirectory() as scratch, floor_server(scratch) as (address, _):
        bulk = bulk_floor(address)
    lines = ["grpc-python moving 64 MB to a trivial grpc.aio handler over loopback (4 MB back):"]
    lines += [f"  {way:<28} {seconds * 1e3:7.1f} ms" for way, seconds in bulk.items()]
    small_lines, facts = small_calls()
    return lines + small_lines, facts


def main() -> None:
    print("\n".join(run()[0]))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        asyncio.run(_serve(sys.argv[2]))
    else:
        main()
