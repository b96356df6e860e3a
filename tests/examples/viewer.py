"""Watch a room over the raw protocol from Python, with `websockets` (`pip install websockets`).

    python3 tests/examples/viewer.py http://127.0.0.1:8080 1001            # until Ctrl-C
    python3 tests/examples/viewer.py http://127.0.0.1:8080 1001 --count 3  # three messages, then exit

Token and node list from control, then AUTH (op 7) asking for zlib batches (protover 2, inflated
with the standard library), a HEARTBEAT (op 2) every 30 s, and every MESSAGE (op 5) printed.
The framing is docs/protocol.md.
"""

import argparse
import json
import random
import struct
import threading
import urllib.request
import zlib

from websockets.sync.client import connect

HEADER = struct.Struct(">IHHII")  # length, header length (16), version, op, sequence


def packet(op: int, body: bytes = b"", seq: int = 1) -> bytes:
    return HEADER.pack(HEADER.size + len(body), HEADER.size, 1, op, seq) + body


def packets(data: bytes):
    """(version, op, body) of each packet in a run, batches unpacked."""
    at = 0
    while at < len(data):
        length, _, version, op, _ = HEADER.unpack_from(data, at)
        body = data[at + HEADER.size : at + length]
        at += length
        if op == 5 and version == 2:
            yield from packets(zlib.decompress(body))
        else:
            yield version, op, body


def http_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("control", nargs="?", default="http://127.0.0.1:8080")
    args.add_argument("room", nargs="?", type=int, default=1001)
    args.add_argument("--count", type=int, default=0, help="exit after this many messages")
    a = args.parse_args()

    uid = random.randint(1, 2**31)
    token = http_json(f"{a.control}/v1/tokens", {"uid": uid, "rooms": [a.room]})["token"]
    node = http_json(f"{a.control}/v1/nodes")["nodes"][0]
    with connect(f"ws://{node['ws']}/sub") as ws:
        auth = {"uid": uid, "roomid": a.room, "protover": 2, "key": token}
        ws.send(packet(7, json.dumps(auth).encode()))
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(30):
                ws.send(packet(2))

        threading.Thread(target=heartbeat, daemon=True).start()
        seen = 0
        for frame in ws:
            for version, op, body in packets(frame):
                if op == 8:
                    print(f"joined room {a.room} on {node['node_id']}: {body.decode()}", flush=True)
                    ws.send(packet(2))
                elif op == 3:
                    print(f"online: {struct.unpack('>I', body)[0]}", flush=True)
                elif op == 5:
                    print(f"message: {body.decode()}", flush=True)
                    seen += 1
            if a.count and seen >= a.count:
                break
        stop.set()


if __name__ == "__main__":
    main()
