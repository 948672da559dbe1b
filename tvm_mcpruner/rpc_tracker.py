"""Addressing and asking a TVM RPC tracker: ``HOST:PORT`` parsing, its summary, waiting for servers.

``tvm.rpc.connect_tracker`` retries a refused connection for 60 s before it raises, so
the tracker is asked here through one plain socket with a short timeout (same
protocol: magic number, then ``[TrackerCode.SUMMARY]``; stdlib only, so the asking
process need not import TVM): an absent tracker is a clear
:class:`TrackerUnreachableError` at once.

The processes behind a tracker are started by :mod:`tvm_mcpruner.rpc_farm` (which
re-exports the public names here) and :mod:`tvm_mcpruner.arm_emulation`. Private module
(not exported by ``tvm_mcpruner``); stdlib only.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import time
from typing import Any

__all__ = [
    "BOARD_KEY",
    "DEFAULT_TRACKER_PORT",
    "LOOPBACK",
    "RPCFarmError",
    "TrackerUnreachableError",
    "board_join_command",
    "free_under",
    "parse_tracker",
    "servers_under",
    "tracker_summary",
    "wait_for_servers",
]

LOOPBACK = "127.0.0.1"
DEFAULT_TRACKER_PORT = 9190
BOARD_KEY = "hikey970"


class RPCFarmError(RuntimeError):
    """A tracker or server of the farm did not start, or died."""


class TrackerUnreachableError(RPCFarmError, ConnectionError):
    """No TVM RPC tracker answers at the address (also a ``ConnectionError``)."""


def board_join_command(tracker: str = f"HOST:{DEFAULT_TRACKER_PORT}", key: str = BOARD_KEY) -> str:
    """The one line a board runs to join the farm (TVM's own server; nothing of ours on the board)."""
    return f"python -m tvm.exec.rpc_server --tracker {tracker} --key {key} --host BOARD"


# --------------------------------------------------------------------------- addresses


def parse_tracker(tracker: str | tuple[str, int], *, loopback_only: bool = True) -> tuple[str, int]:
    """``"127.0.0.1:9190"`` or ``(host, port)`` -> ``("127.0.0.1", 9190)``; loopback hosts only.

    ``loopback_only=False`` (``rpc_farm``: a real board farm's tracker may sit on another
    machine) accepts any host name and only maps ``localhost`` to 127.0.0.1.
    """
    if isinstance(tracker, tuple):
        host, port = tracker
    elif isinstance(tracker, str) and ":" in tracker:
        host, _, port = tracker.rpartition(":")
    else:
        raise ValueError(f"tracker must be 'HOST:PORT' (e.g. 127.0.0.1:9190), got {tracker!r}")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"tracker port must be an integer, got {port!r} in {tracker!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"tracker port must be in 1..65535, got {port}")
    if not loopback_only:
        if not isinstance(host, str) or not host:
            raise ValueError(f"tracker must be 'HOST:PORT' (e.g. 127.0.0.1:9190), got {tracker!r}")
        return (LOOPBACK if host == "localhost" else host), port
    return _loopback(host), port


def _loopback(host: str) -> str:
    """A local stand-in server must never talk to another machine: loopback hosts only."""
    if host == "localhost":
        return LOOPBACK
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"the RPC tracker must be on a loopback address (127.0.0.1), got {host!r}")


# --------------------------------------------------------------------------- asking the tracker


def _unreachable(host: str, port: int, why: object) -> TrackerUnreachableError:
    return TrackerUnreachableError(
        f"no TVM RPC tracker answers at {host}:{port} ({why}); start one with "
        f"`mcpruner tracker --port {port}` (or `python -m tvm.exec.rpc_tracker --host 0.0.0.0 "
        f"--port {port}`), then let servers join it with `{board_join_command(f'{host}:{port}')}` "
        f"or `mcpruner server --tracker {host}:{port} --key KEY`")


# TVM's tracker wire protocol (tvm/rpc/base.py: RPC_TRACKER_MAGIC, TrackerCode), spoken
# here with the stdlib so that asking a tracker needs no `import tvm` (~3 s a process);
# tests check them against TVM's. Frames are [int32 little-endian length][JSON].
_TRACKER_MAGIC = 0x2F271
_CODE_SUCCESS = 0
_CODE_SUMMARY = 6


def _recv_exactly(sock: socket.socket, nbytes: int) -> bytes:
    data = b""
    while len(data) < nbytes:
        chunk = sock.recv(nbytes - len(data))
        if not chunk:
            raise ConnectionResetError("connection closed by the peer")
        data += chunk
    return data


def _ask_tracker(address: str | tuple[str, int], request: list[Any], timeout: float = 5.0) -> Any:
    """Send one request over a fresh connection and return the reply (no 60 s retry loop)."""
    host, port = parse_tracker(address, loopback_only=False)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        raise _unreachable(host, port, err) from None
    with sock:
        try:
            sock.sendall(struct.pack("<i", _TRACKER_MAGIC))
            if struct.unpack("<i", _recv_exactly(sock, 4))[0] != _TRACKER_MAGIC:
                raise _unreachable(host, port, "something listens there, but it is not a TVM RPC tracker")
            payload = json.dumps(request).encode()
            sock.sendall(struct.pack("<i", len(payload)) + payload)
            size = struct.unpack("<i", _recv_exactly(sock, 4))[0]
            return json.loads(_recv_exactly(sock, size).decode())
        except (OSError, ValueError, struct.error) as err:
            raise _unreachable(host, port, f"the connection failed: {err}") from None


def tracker_summary(address: str | tuple[str, int], timeout: float = 5.0) -> dict[str, Any]:
    """What the tracker knows, as ``tvm.rpc.TrackerSession.summary()`` returns it.

    ``{"queue_info": {key: {"free": n, "pending": m}}, "server_info": [{"key":
    "server:KEY", "addr": [host, port]}, ...]}``: ``server_info`` lists every registered
    server (busy or not), ``free`` those waiting for a session. Raises
    :class:`TrackerUnreachableError` within ``timeout`` when nothing answers.
    """
    reply = _ask_tracker(address, [_CODE_SUMMARY], timeout)
    if not (isinstance(reply, list) and len(reply) == 2 and reply[0] == _CODE_SUCCESS):
        raise RPCFarmError(f"the tracker at {address} answered the summary request with {reply!r}")
    return reply[1]


def servers_under(summary: dict[str, Any], key: str) -> list[tuple[str, int]]:
    """``(host, port)`` of every server a :func:`tracker_summary` lists under ``key`` (busy or free)."""
    return sorted((info["addr"][0], int(info["addr"][1])) for info in summary.get("server_info", [])
                  if info.get("key") == f"server:{key}")


def free_under(summary: dict[str, Any], key: str) -> int:
    """How many servers a :func:`tracker_summary` lists free (waiting for a session) under ``key``."""
    return summary.get("queue_info", {}).get(key, {}).get("free", 0)


def wait_for_servers(address: str | tuple[str, int], key: str, count: int = 1,
                     timeout: float = 60.0) -> list[tuple[str, int]]:
    """Wait until ``count`` servers are registered under ``key`` and free; their ``(host, port)``.

    Raises :class:`TrackerUnreachableError` when the tracker does not answer and
    ``TimeoutError`` (saying what the tracker does list) when they do not all come.
    """
    deadline = time.monotonic() + timeout
    while True:
        summary = tracker_summary(address)
        servers = servers_under(summary, key)
        if len(servers) >= count and free_under(summary, key) >= count:
            return servers
        if time.monotonic() > deadline:
            raise TimeoutError(f"after {timeout:g} s the tracker at {address} has {len(servers)} server(s) "
                               f"under key {key!r} ({free_under(summary, key)} free), not {count}; "
                               f"it lists: {summary}")
        time.sleep(0.25)
