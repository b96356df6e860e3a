"""Publish a bullet comment into a room from Python with nats-py (`pip install nats-py`).

    python3 tests/examples/publish.py nats://127.0.0.1:4222 1001 "hello from Python"
    python3 tests/examples/publish.py nats://127.0.0.1:4222 1001 "once" order-17   # a message id
    python3 tests/examples/publish.py URL 1001 "hi" order-18 _INBOX.backend   # another NATS user

A JetStream publish: the ack means the message is stored (it survives a distributor crash), and
the Nats-Msg-Id header makes a retried publish count once: give the same id to retries of one
message, a new id to each new message (here a random one unless given). `await nc.publish(subject,
data)` works too, without the ack.
"""

import asyncio
import json
import sys
import uuid

import nats


async def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222"
    room = int(sys.argv[2]) if len(sys.argv) > 2 else 1001
    text = sys.argv[3] if len(sys.argv) > 3 else "hello from Python"
    msg_id = sys.argv[4] if len(sys.argv) > 4 else f"python-example-{uuid.uuid4()}"

    # A publisher reads its replies (the JetStream ack) only under its own inbox prefix,
    # `_INBOX.<its NATS user>`: `business` on scripts/up's fabric (docs/deploy.md).
    inbox = sys.argv[5] if len(sys.argv) > 5 else "_INBOX.business"
    nc = await nats.connect(url, inbox_prefix=inbox.encode())
    js = nc.jetstream()
    # danmu.push.<lo|hi>.<scope>.<target>: low priority, room scope.
    subject = f"danmu.push.lo.room.{room}"
    payload = {"cmd": "DANMU_MSG", "info": [[0, 1, 25, 16777215], text, [7, "python-example"]]}
    ack = await js.publish(
        subject,
        json.dumps(payload).encode(),
        # The same id again inside the stream's duplicate window is stored once, delivered once.
        headers={"Nats-Msg-Id": msg_id},
    )
    if ack.duplicate:
        print(f"duplicate of #{ack.seq} in {ack.stream} (Nats-Msg-Id {msg_id}): not delivered again")
    else:
        print(f"stored in {ack.stream} as #{ack.seq} ({subject}, Nats-Msg-Id {msg_id})")
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
