"""Helper for .ci/rgw: free ports, monitor commands (librados via ctypes), S3 probes.

Standard library only: it runs with the machine's python3 before the project's
environment exists. librados.so.2 is found through LD_LIBRARY_PATH (set by .ci/rgw).

    rgw_helper.py free-ports PREFERRED...   (one free port per argument, all distinct)
    rgw_helper.py mon CONF FSID MON_LOG TIMEOUT JSON_COMMAND|--|wait-osd-up...
        (the commands between two "--" run concurrently; wait-osd-up waits for an OSD to be up)
    rgw_helper.py s3-ready ENDPOINT ACCESS_KEY SECRET_KEY OWNER TIMEOUT RGW_PID_FILE PID_FILE...
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request


def free_port(preferred: int, taken: set[int]) -> int:
    for wanted in (preferred, 0, 0, 0):
        if wanted and wanted in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # as the servers do: a port whose old connections are in TIME_WAIT is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", wanted))
            except OSError:
                continue
            port = int(s.getsockname()[1])
            if port not in taken:
                return port
    raise SystemExit("no free port")


BIND_FAILED = 3  # exit status: our monitor could not bind its port (another process has it)


def mon_commands(conf: str, fsid: str, mon_log: str, timeout: float, commands: list[str]) -> None:
    """Connect to our monitor (retrying until TIMEOUT) and run the JSON commands, group by group.

    Exits with BIND_FAILED if MON_LOG says the monitor could not bind its port, or if the monitor
    that answers is another cluster's (a different fsid): commands must never reach it.
    """

    def bind_failed() -> bool:
        try:
            with open(mon_log, errors="replace") as f:
                return "unable to bind" in f.read()
        except OSError:
            return False

    lib = ctypes.CDLL("librados.so.2")
    lib.rados_create2.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_uint64,
    ]
    lib.rados_conf_read_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.rados_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.rados_connect.argtypes = [ctypes.c_void_p]
    lib.rados_shutdown.argtypes = [ctypes.c_void_p]
    lib.rados_buffer_free.argtypes = [ctypes.c_void_p]
    lib.rados_mon_command.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_size_t),
    ]

    deadline = time.monotonic() + timeout
    while True:
        cluster = ctypes.c_void_p()
        if lib.rados_create2(ctypes.byref(cluster), b"ceph", b"client.admin", 0) != 0:
            raise SystemExit("rados_create2 failed")
        lib.rados_conf_read_file(cluster, conf.encode())
        lib.rados_conf_set(cluster, b"client_mount_timeout", b"5")
        if bind_failed():
            lib.rados_shutdown(cluster)
            print(f"the monitor could not bind its port (see {mon_log})", file=sys.stderr)
            raise SystemExit(BIND_FAILED)
        ret = lib.rados_connect(cluster)
        if ret == 0:
            break
        lib.rados_shutdown(cluster)
        if time.monotonic() > deadline:
            raise SystemExit(f"could not connect to the monitor (error {ret})")
        time.sleep(0.2)

    def run(command: str) -> bytes:
        cmd = (ctypes.c_char_p * 1)(command.encode())
        outbuf, outs = ctypes.c_void_p(), ctypes.c_void_p()
        outbuf_len, outs_len = ctypes.c_size_t(), ctypes.c_size_t()
        ret = lib.rados_mon_command(
            cluster,
            cmd,
            1,
            b"",
            0,
            ctypes.byref(outbuf),
            ctypes.byref(outbuf_len),
            ctypes.byref(outs),
            ctypes.byref(outs_len),
        )
        out = ctypes.string_at(outbuf, outbuf_len.value) if outbuf else b""
        status = ctypes.string_at(outs, outs_len.value).decode(errors="replace") if outs else ""
        if outbuf:
            lib.rados_buffer_free(outbuf)
        if outs:
            lib.rados_buffer_free(outs)
        if ret != 0:
            raise SystemExit(f"monitor command {command} failed ({ret}): {status}")
        return out

    def run_group(group: list[str]) -> None:
        # Concurrent commands share one paxos round: 7 pool creations take 0.15 s, not 0.5 s.
        errors: list[BaseException] = []

        def one(command: str) -> None:
            try:
                run(command)
            except BaseException as e:  # reported below, from the main thread
                errors.append(e)

        threads = [threading.Thread(target=one, args=(c,)) for c in group]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def wait_osd_up() -> None:
        # Clients that fetch an osdmap with the OSD still down wait for their next 5 s tick
        # before asking again: hand over to radosgw-admin only once the OSD is up.
        while True:
            stat = json.loads(run('{"prefix": "osd stat", "format": "json"}'))
            if stat.get("num_up_osds", 0) >= 1:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"the OSD did not come up: {stat}")
            time.sleep(0.05)

    try:
        answer = json.loads(run('{"prefix": "fsid", "format": "json"}'))
        if answer.get("fsid") != fsid or bind_failed():
            print(f"another cluster's monitor answers (fsid {answer.get('fsid')})", file=sys.stderr)
            raise SystemExit(BIND_FAILED)
        group: list[str] = []
        for command in [*commands, "--"]:
            if command not in ("--", "wait-osd-up"):
                group.append(command)
                continue
            run_group(group)
            group = []
            if command == "wait-osd-up":
                wait_osd_up()
    finally:
        lib.rados_shutdown(cluster)


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def s3_list_buckets(endpoint: str, access_key: str, secret_key: str) -> tuple[int, bytes]:
    """A SigV4-signed ListBuckets; returns the HTTP status and body."""
    host = endpoint.split("://", 1)[1].rstrip("/")
    now = time.gmtime()
    amz_date, day = time.strftime("%Y%m%dT%H%M%SZ", now), time.strftime("%Y%m%d", now)
    region, service = "us-east-1", "s3"
    payload_hash = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        ["GET", "/", "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload_hash]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _sign(("AWS4" + secret_key).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _sign(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(endpoint.rstrip("/") + "/", method="GET")
    request.add_header("x-amz-content-sha256", payload_hash)
    request.add_header("x-amz-date", amz_date)
    request.add_header(
        "Authorization",
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


PORT_TAKEN = 4  # exit status: another process listens on radosgw's port


def _pid(pid_file: str) -> int | None:
    """The pid in PID_FILE if that process runs (a zombie does not: its reaper may be slow)."""
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/status") as f:
            state = next(line.split()[1] for line in f if line.startswith("State:"))
    except (OSError, ValueError, StopIteration, IndexError):
        return None
    return None if state in ("Z", "X") else pid


def _listeners(port: int) -> set[str]:
    """Socket inodes listening on PORT on 127.0.0.1 or a wildcard address (IPv4 or IPv6)."""
    inodes = set()
    # 0.0.0.0, 127.0.0.1, ::, ::ffff:127.0.0.1 as /proc/net/tcp{,6} print them
    clashing = {
        "00000000",
        "0100007F",
        "00000000000000000000000000000000",
        "0000000000000000FFFF00000100007F",
    }
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            addr, hexport = fields[1].split(":")
            if fields[3] == "0A" and int(hexport, 16) == port and addr in clashing:
                inodes.add(fields[9])
    return inodes


def _sockets(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        pass
    return inodes


def s3_ready(
    endpoint: str,
    *,
    access_key: str,
    secret_key: str,
    owner: str,
    timeout: float,
    rgw_pid_file: str,
    other_pid_files: list[str],
) -> None:
    """Wait until our radosgw listens and a signed request succeeds; check a wrong key fails.

    Exits with PORT_TAKEN as soon as another process listens on the port: radosgw would fail to
    bind it, and radosgw 16 then often crashes or even hangs on its way out instead of exiting.
    The answer must also name OWNER, the display name of this start's user (unique per start).
    """
    port = int(endpoint.rsplit(":", 1)[1].rstrip("/"))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        dead = [os.path.basename(p) for p in other_pid_files if _pid(p) is None]
        if dead:
            raise SystemExit(f"daemon exited: {', '.join(dead)} (see its log)")
        pid = _pid(rgw_pid_file)
        listening = _listeners(port)
        ours = pid is not None and bool(listening & _sockets(pid))
        if listening and not ours:
            print(f"port {port} is taken by another process", file=sys.stderr)
            raise SystemExit(PORT_TAKEN)
        if pid is None:
            raise SystemExit("radosgw exited (see its log)")
        if ours:
            try:
                status, body = s3_list_buckets(endpoint, access_key, secret_key)
                name = re.search(rb"<DisplayName>(.*?)</DisplayName>", body)
                if status == 200 and name and name[1].decode() == owner:
                    break
                last = f"HTTP {status}: {body[:200]!r}"
            except OSError as e:
                last = str(e)
        else:
            last = "radosgw is not listening yet"
        if time.monotonic() > deadline:
            raise SystemExit(f"S3 not ready after {timeout:.0f} s (last: {last})")
        time.sleep(0.05)
    status, _ = s3_list_buckets(endpoint, access_key, secret_key + "x")
    if status != 403:
        raise SystemExit(f"a wrong secret key got HTTP {status}, expected 403")


def main(argv: list[str]) -> None:
    if argv[:1] == ["free-ports"]:
        taken: set[int] = set()
        for preferred in argv[1:]:
            port = free_port(int(preferred), taken)
            taken.add(port)
            print(port)

    elif argv[:1] == ["mon"]:
        mon_commands(argv[1], argv[2], argv[3], float(argv[4]), argv[5:])
    elif argv[:1] == ["s3-ready"]:
        s3_ready(
            argv[1],
            access_key=argv[2],
            secret_key=argv[3],
            owner=argv[4],
            timeout=float(argv[5]),
            rgw_pid_file=argv[6],
            other_pid_files=argv[7:],
        )
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
