#!/usr/bin/env python3
"""Readiness probe for the test-bench Kafka broker (standard library only).

Sends ApiVersions v0 and then Metadata v4 (no topics) over the plain Kafka
protocol and succeeds only when the broker answers both and lists itself
among the live brokers, i.e. it is out of start-up and unfenced.

usage: kafka_probe.py HOST PORT     exit 0 = ready, 1 = not ready
"""
import socket
import struct
import sys


def _request(sock, api_key, api_version, correlation_id, body):
    client_id = b"stack-probe"
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _read(sock, 4))[0]
    data = _read(sock, size)
    if struct.unpack(">i", data[:4])[0] != correlation_id:
        raise RuntimeError("correlation id mismatch")
    return data[4:]


def _read(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return buf


def _string(data, pos):
    (length,) = struct.unpack(">h", data[pos:pos + 2])
    pos += 2
    if length < 0:
        return None, pos
    return data[pos:pos + length].decode(), pos + length


def probe(host, port):
    with socket.create_connection((host, port), timeout=3) as sock:
        sock.settimeout(3)
        # ApiVersions v0: empty body; response: error_code int16, [api_key, min, max].
        resp = _request(sock, 18, 0, 1, b"")
        (error_code,) = struct.unpack(">h", resp[:2])
        if error_code != 0:
            return False, "ApiVersions error %d" % error_code
        # Metadata v4: topics = empty array (not null: no topic listing),
        # allow_auto_topic_creation = false.
        resp = _request(sock, 3, 4, 2, struct.pack(">i?", 0, False))
        pos = 4  # throttle_time_ms
        (n_brokers,) = struct.unpack(">i", resp[pos:pos + 4])
        pos += 4
        brokers = []
        for _ in range(n_brokers):
            (node_id,) = struct.unpack(">i", resp[pos:pos + 4])
            pos += 4
            bhost, pos = _string(resp, pos)
            (bport,) = struct.unpack(">i", resp[pos:pos + 4])
            pos += 4
            _rack, pos = _string(resp, pos)
            brokers.append((node_id, bhost, bport))
        cluster_id, pos = _string(resp, pos)
        (controller_id,) = struct.unpack(">i", resp[pos:pos + 4])
        if not any(b[2] == port for b in brokers):
            return False, "broker not yet live (brokers=%r)" % (brokers,)
        if controller_id < 0:
            return False, "no active controller yet"
        return True, "cluster_id=%s brokers=%r controller=%d" % (cluster_id, brokers, controller_id)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        ok, msg = probe(host, port)
    except (OSError, RuntimeError, struct.error) as exc:
        ok, msg = False, str(exc)
    print(msg)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
