"""Runs the unmodified `blivedm` client (PyPI, pinned by scripts/install-deps) against our
gateway's own wss port and prints what it decoded, one JSON object per line, like receive.js:
{"event":"live"} once authenticated (blivedm sends its first heartbeat only after AUTH_REPLY
code 0, so the first heartbeat reply marks it), {"event":"msg","data":...} per business message.

blivedm takes its server list and token from Bilibili's HTTP API; here they are set the way that
API would have set them (host, wss port, token), with certificate checks off (`ssl=False`, the
library's own option) because the test certificate is self-signed.

    python3 blivedm_receive.py HOST WSS_PORT ROOM UID TOKEN
"""

import asyncio
import json
import sys

import blivedm


class Printer(blivedm.BaseHandler):
    def __init__(self):
        self.live = False

    async def handle(self, client, command):
        if command.get("cmd") == "_HEARTBEAT":
            if not self.live:
                self.live = True
                print(json.dumps({"event": "live"}, separators=(",", ":")), flush=True)
            return
        print(json.dumps({"event": "msg", "data": command}, separators=(",", ":")), flush=True)


async def main():
    host, port, room, uid, token = sys.argv[1:6]
    client = blivedm.BLiveClient(int(room), uid=int(uid), ssl=False)
    client._room_id = int(room)
    client._host_server_list = [
        {"host": host, "port": int(port), "wss_port": int(port), "ws_port": int(port)}
    ]
    client._host_server_token = token
    client.add_handler(Printer())
    client.start()
    try:
        await client.join()
    except Exception as error:  # noqa: BLE001 - reported to the test, which fails on it
        print(json.dumps({"event": "error", "why": repr(error)}, separators=(",", ":")), flush=True)
    finally:
        await client.stop_and_close()


if __name__ == "__main__":
    asyncio.run(main())
