#!/usr/bin/env python3
"""End-to-end check of one region of the danmu fabric, with the Python standard library only.

The chart's `helm test` pod runs it; tests/tests/helm_smoke.rs runs the same file against a
fabric on loopback. Steps, each with the deadline of --timeout in total:

1. POST <control>/v1/tokens for a test user admitted to --room (Bearer: the first of --api-keys).
2. GET <control>/v1/nodes?region=<region>: the first gateway listed with a TCP address
   (or --gateway host:port, when the advertised address is not reachable from here).
3. TCP to that gateway, AUTH (op 7) with the token, expect AUTH_REPLY (op 8) {"code":0}.
4. Publish {"cmd":"DANMU_SMOKE","nonce":...} on danmu.push.hi.room.<room> over core NATS
   (--nats, credentials in the URL), once a second until it arrives.
5. Expect a MESSAGE (op 5) carrying that nonce; frames: SPEC "Client wire protocol".

Exit status 0 and one line "ok: ..." on success; 1 and "error: ..." on failure.
"""

import argparse
import json
import os
import socket
import struct
import sys
import time
import urllib.parse
import urllib.request
import uuid
import zlib

OP_HEARTBEAT, OP_MESSAGE, OP_AUTH, OP_AUTH_REPLY = 2, 5, 7, 8
HEADER = struct.Struct(">IHHII")  # length, header length (16), version, operation, sequence


class Fail(Exception):
    pass


def http_json(url, body=None, api_key=None, timeout=5.0):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("Authorization", "Bearer " + api_key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise Fail(f"{url}: HTTP {error.code}: {error.read()[:200]!r}") from None
    except OSError as error:
        raise Fail(f"{url}: {error}") from None


def frame(op, body, version=1, seq=1):
    return HEADER.pack(HEADER.size + len(body), HEADER.size, version, op, seq) + body


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise Fail("the gateway closed the connection")
        out += chunk
    return out


def read_frame(sock):
    length, header_len, version, op, _ = HEADER.unpack(read_exact(sock, HEADER.size))
    if header_len != HEADER.size or length < HEADER.size:
        raise Fail(f"bad frame header: length {length}, header {header_len}")
    return version, op, read_exact(sock, length - HEADER.size)


def bodies(version, op, body):
    """The JSON bodies of a MESSAGE frame: version 0 is one body, version 2 nested packets."""
    if op != OP_MESSAGE:
        return []
    if version == 0:
        return [body]
    if version == 2:
        inner, out = zlib.decompress(body), []
        while inner:
            length, header_len, v, o, _ = HEADER.unpack(inner[: HEADER.size])
            out += bodies(v, o, inner[header_len:length])
            inner = inner[length:]
        return out
    return []


def nats_publish(url, subject, payload, timeout):
    """One core-NATS publish, confirmed by a PONG (an -ERR, e.g. a permission violation, fails)."""
    parts = urllib.parse.urlsplit(url.split(",")[0].strip())
    connect = {"verbose": False, "pedantic": False, "name": "danmu-smoke", "lang": "python"}
    if parts.username:
        connect["user"] = urllib.parse.unquote(parts.username)
        connect["pass"] = urllib.parse.unquote(parts.password or "")
    with socket.create_connection((parts.hostname, parts.port or 4222), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        info = reader.readline()
        if not info.startswith(b"INFO "):
            raise Fail(f"{parts.hostname}: not a NATS server: {info[:80]!r}")
        sock.sendall(
            b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
            + f"PUB {subject} {len(payload)}\r\n".encode() + payload + b"\r\nPING\r\n"
        )
        while True:
            line = reader.readline()
            if not line:
                raise Fail("NATS closed the connection")
            if line.startswith(b"PONG"):
                return
            if line.startswith(b"-ERR"):
                raise Fail(f"NATS refused the publish: {line.decode().strip()}")


def run(args):
    deadline = time.monotonic() + args.timeout
    keys = [k.strip() for k in (args.api_keys or "").split(",") if k.strip()]
    control = args.control.rstrip("/")
    uid = 900000 + os.getpid() % 100000
    token = http_json(
        control + "/v1/tokens",
        {"uid": uid, "rooms": [args.room], "ttl_secs": 300},
        api_key=keys[0] if keys else None,
    )["token"]

    gateway = args.gateway
    if not gateway:
        query = urllib.parse.urlencode({"region": args.region, "uid": uid})
        while not gateway:
            nodes = http_json(f"{control}/v1/nodes?{query}").get("nodes", [])
            gateway = next((n["tcp"] for n in nodes if n.get("tcp")), None)
            if not gateway:
                if time.monotonic() > deadline:
                    raise Fail(f"no gateway with a TCP address in the node list: {nodes}")
                time.sleep(0.5)
    host, _, port = gateway.rpartition(":")

    with socket.create_connection((host.strip("[]"), int(port)), timeout=5) as sock:
        auth = {"uid": uid, "roomid": args.room, "protover": 2, "platform": "smoke", "type": 2,
                "key": token}
        sock.sendall(frame(OP_AUTH, json.dumps(auth).encode()))
        version, op, body = read_frame(sock)
        if op != OP_AUTH_REPLY or json.loads(body or b"{}").get("code") != 0:
            raise Fail(f"AUTH refused: op {op}, body {body[:200]!r}")

        nonce = uuid.uuid4().hex
        payload = json.dumps({"cmd": "DANMU_SMOKE", "nonce": nonce}).encode()
        subject = f"danmu.push.hi.room.{args.room}"
        next_publish = 0.0
        sock.settimeout(0.5)
        while True:
            now = time.monotonic()
            if now > deadline:
                raise Fail(f"no message with nonce {nonce} from {gateway} within {args.timeout}s")
            # The gateway subscribes the room's edge subjects after AUTH: publish again until
            # one arrives (the high-priority path never batches, so one publish is one message).
            if now >= next_publish:
                nats_publish(args.nats, subject, payload, timeout=5)
                sock.sendall(frame(OP_HEARTBEAT, b""))
                next_publish = now + 1.0
            try:
                version, op, body = read_frame(sock)
            except socket.timeout:
                continue
            if any(nonce.encode() in b for b in bodies(version, op, body)):
                print(f"ok: token for uid {uid}, gateway {gateway}, message in room {args.room}")
                return


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", default=os.environ.get("DANMU_CONTROL_URL"),
                        help="control's base URL (env DANMU_CONTROL_URL)")
    parser.add_argument("--nats", default=os.environ.get("DANMU_NATS_URL"),
                        help="NATS URL, user:password@ for credentials (env DANMU_NATS_URL)")
    parser.add_argument("--api-keys", default=os.environ.get("DANMU_API_KEYS", ""),
                        help="comma-separated control API keys; the first is used (env DANMU_API_KEYS)")
    parser.add_argument("--region", default=os.environ.get("DANMU_REGION", ""))
    parser.add_argument("--room", type=int, default=int(os.environ.get("DANMU_ROOM", "990001")))
    parser.add_argument("--gateway", default=os.environ.get("DANMU_GATEWAY"),
                        help="host:port of a gateway's TCP listener instead of the node list's")
    parser.add_argument("--timeout", type=float,
                        default=float(os.environ.get("DANMU_TIMEOUT", "30")))
    args = parser.parse_args()
    if not args.control or not args.nats:
        parser.error("--control and --nats are required")
    try:
        run(args)
    except (Fail, OSError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
