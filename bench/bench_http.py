"""HTTP blobs: put and get through HttpBlobBackend and a blob server, against FilesystemBlobBackend direct.

put: ``stage`` (1 MiB chunks) + ``publish`` + ``discard``; get: ``open`` + ``VerifiedReader.read(1 MiB)``
until EOF (sha256 checked at the end). The blob server runs in its own process (as `objstore serve-blobs`
would) over a FilesystemBlobBackend in the round's folder, on loopback, with a token; so both contenders
write to the same disk, and the HTTP figure is what the protocol adds on top of it: the client's local
staging file, the socket, and hashing on both sides. Small blobs show the per-request cost (one PUT, or
HEAD + PUT from 1 MiB on, and one GET per blob, over a kept-alive connection).

Peak memory: after the timed rounds, one more large put + get with the client under tracemalloc, and the
server's VmHWM growth over that operation (peak reset first through /proc/<pid>/clear_refs).

Writes bench/results/http.json.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import (
    MiB,
    interleave,
    paired_ratio,
    parser,
    print_throughput,
    rounds_for,
    save_results,
    stopwatch,
    summarize,
)

TOKEN = "bench-token-0123456789abcdef"
SERVER = """
import sys
from pathlib import Path
from objstore.blobs.filesystem import FilesystemBlobBackend
from objstore.blobs.http_server import BlobServer
server = BlobServer(FilesystemBlobBackend(Path(sys.argv[1])), "127.0.0.1", 0, token=sys.argv[2])
print(server.port, flush=True)
server.serve_forever()
"""


@contextmanager
def blob_server(folder: Path) -> Iterator[tuple[int, int]]:
    """A blob server process over ``folder``; its port and pid."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(folder), TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline()), process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def chunks(size: int) -> Iterator[bytes]:
    block = os.urandom(MiB)
    for start in range(0, size, MiB):
        yield block[: min(MiB, size - start)]  # same bytes each MiB: generation costs nothing


def put_get(backend: Any, size: int, count: int) -> dict[str, float]:
    from objstore.blobs.verify import VerifiedReader

    payloads = [os.urandom(size) for _ in range(count)] if count > 1 else None
    lap = stopwatch()
    staged_all = []
    for i in range(count):
        staged = backend.stage([payloads[i]] if payloads else chunks(size))
        backend.publish(staged)
        backend.discard(staged)
        staged_all.append(staged)
    put = lap()
    lap = stopwatch()
    for staged in staged_all:
        with VerifiedReader(backend.open(staged.sha256), sha256=staged.sha256, size=size, what="b") as r:
            while r.read(MiB):
                pass
    return {"put": put, "get": lap()}


def filesystem_round(size: int, count: int) -> Any:
    def run(folder: Path) -> dict[str, float]:
        from objstore.blobs.filesystem import FilesystemBlobBackend

        return put_get(FilesystemBlobBackend(folder / "blobs"), size, count)

    return run


def http_round(size: int, count: int) -> Any:
    def run(folder: Path) -> dict[str, float]:
        from objstore.blobs.http import HttpBlobBackend

        with blob_server(folder / "blobs") as (port, _):
            client = HttpBlobBackend(f"127.0.0.1:{port}", token=TOKEN, staging_dir=folder / "staging")
            try:
                return put_get(client, size, count)
            finally:
                client.close()

    return run


def hwm_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) if match else 0


def peak_memory(folder: Path, size: int) -> dict[str, float]:
    from objstore.blobs.http import HttpBlobBackend

    with blob_server(folder / "blobs") as (port, pid):
        client = HttpBlobBackend(f"127.0.0.1:{port}", token=TOKEN, staging_dir=folder / "staging")
        client.exists("0" * 64)  # warm: connection, imports on both sides
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the server's high-water mark
        base = hwm_kib(pid)
        tracemalloc.start()
        put_get(client, size, 1)
        _, client_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        client.close()
        return {"client_peak_mib": client_peak / MiB, "server_hwm_growth_mib": (hwm_kib(pid) - base) / 1024}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    large = 16 * MiB if args.quick else 64 * MiB
    small_count = 100 if args.quick else 500
    rounds = rounds_for(args, 2, 5)
    results: dict[str, Any] = {"large_bytes": large}
    for label, size, count in (("large", large, 1), ("small", 4096, small_count)):
        samples = interleave(
            {"filesystem": filesystem_round(size, count), "http": http_round(size, count)},
            rounds,
            base=args.tmpdir,
            progress=label,
        )
        stats = summarize(samples, ops=count)
        for phase in ("put", "get"):
            subset = {k: v for k, v in stats.items() if k.endswith(phase)}
            title = f"{label} {phase}: {count} x {size:,} bytes"
            print_throughput(title, subset, [f"filesystem {phase}"], f"http {phase}")
            if count == 1:
                for name, s in subset.items():
                    print(f"  {name}: {size / MiB / s['median_s']:,.0f} MiB/s")
            ratio = paired_ratio(samples[f"filesystem {phase}"], samples[f"http {phase}"])
            stats[f"http {phase}"]["paired_throughput_vs_filesystem"] = ratio
        results[label] = stats
    from common import fresh_dir

    with fresh_dir(args.tmpdir) as folder:
        results["memory"] = memory = peak_memory(folder, large)
    print(
        f"\npeak memory for a {large // MiB} MiB put + get: client (tracemalloc) "
        f"{memory['client_peak_mib']:.1f} MiB, server VmHWM growth {memory['server_hwm_growth_mib']:.1f} MiB"
    )
    save_results("http", args, **results)


if __name__ == "__main__":
    main()
