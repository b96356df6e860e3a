// Records real frames from a running gateway as fixtures for codec.test.mjs. Run once, by hand,
// against a fabric (scripts/up, or `web-fabric` as scripts/test-web starts it); the fixtures are
// committed, so the library's tests need no fabric.
//
//   node --experimental-websocket client/tools/record.mjs http://127.0.0.1:8080 nats://127.0.0.1:4222
//
// Joins room 4242 three times (protover 0, 2 and 3), publishes a known set of messages through
// NATS with nats-py (one comment alone, a burst of 12 that the distributor batches, a gift, a
// high-priority notice), sends two UPSTREAM danmu, and writes every binary WebSocket message each
// connection received, base64, to fixtures/frames.json with the payloads it published.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { demoToken, encodePacket, fetchNodes, Op, Version } from '../dist/danmu-client.js';


const [control, nats] = process.argv.slice(2);
if (!control || !nats) throw new Error('usage: record.mjs <control url> <nats url>');
const ROOM = 4242;
const UID = 9001;

const token = await demoToken(control, UID, [ROOM]);
const node = (await fetchNodes(control, {})).nodes.find((n) => n.ws);
const url = `ws://${node.ws}/sub`;

const connections = [];
for (const protover of [0, 2, 3]) {
  const frames = [];
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  ws.onmessage = (e) => frames.push(Buffer.from(e.data).toString('base64'));
  ws.send(encodePacket(Op.AUTH, Version.CONTROL, 1, JSON.stringify({ uid: UID, roomid: ROOM, protover, key: token })));
  ws.send(encodePacket(Op.HEARTBEAT, Version.CONTROL, 2));
  connections.push({ protover, ws, frames });
}
await new Promise((r) => setTimeout(r, 1000));

const published = [];
const danmu = (i, text) => ({ cmd: 'DANMU_MSG', info: [[0, 1, 25, 16777215, 1700000000000 + i], text, [100 + i, `viewer${i}`]] });
published.push({ subject: `danmu.push.lo.room.${ROOM}`, payload: danmu(0, 'one comment alone') });
for (let i = 1; i <= 12; i++) published.push({ subject: `danmu.push.lo.room.${ROOM}`, payload: danmu(i, `弹幕 burst ${i}`) });
published.push({
  subject: `danmu.push.lo.room.${ROOM}`,
  payload: { cmd: 'SEND_GIFT', data: { giftName: '辣条', giftId: 1, num: 5, price: 100, action: '投喂', uid: 77, uname: 'gifter' } },
});
published.push({ subject: `danmu.push.hi.room.${ROOM}`, payload: { cmd: 'NOTICE_MSG', msg: 'The stream starts in 5 minutes', title: 'Notice' } });

// nats-py (installed by scripts/install-deps): publish them all at once, so the burst batches.
const py = `
import asyncio, json, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    for m in json.loads(sys.argv[2]):
        await nc.publish(m["subject"], json.dumps(m["payload"], ensure_ascii=False, separators=(",", ":")).encode())
    await nc.flush()
    await nc.close()
asyncio.run(main())
`;
execFileSync('python3', ['-c', py, nats, JSON.stringify(published)], { stdio: 'inherit' });
await new Promise((r) => setTimeout(r, 1500));
const upstream = connections[0].ws;
upstream.send(encodePacket(Op.UPSTREAM, Version.CONTROL, 7, JSON.stringify({ msg: 'hello from the fixture' })));
upstream.send(encodePacket(Op.UPSTREAM, Version.CONTROL, 8, JSON.stringify({ msg: 'a second one' })));
await new Promise((r) => setTimeout(r, 2000));
for (const c of connections) c.ws.close();

const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'test', 'fixtures', 'frames.json');
writeFileSync(
  out,
  JSON.stringify(
    {
      recorded: new Date().toISOString().slice(0, 10),
      how: 'web/client/tools/record.mjs against web-fabric (scripts/test-web)',
      room: ROOM,
      uid: UID,
      published: published.map((p) => ({ subject: p.subject, payload: JSON.stringify(p.payload) })),
      upstream: [
        { seq: 7, msg: 'hello from the fixture' },
        { seq: 8, msg: 'a second one' },
      ],
      connections: connections.map((c) => ({ protover: c.protover, frames: c.frames })),
    },
    null,
    1,
  ) + '\n',
);
console.log(`wrote ${out}: ${connections.map((c) => `protover ${c.protover}: ${c.frames.length} frames`).join(', ')}`);
