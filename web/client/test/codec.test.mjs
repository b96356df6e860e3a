// The codec on frames recorded from our gateway (fixtures/frames.json, see ../tools/record.mjs) and on the
// byte examples of docs/protocol.md. Runs on the bundled library (`node build.mjs` first), with
// node's own test runner: `npm run test:client`.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { brotliDecompressSync } from 'node:zlib';
import {
  HEADER_LEN,
  Op,
  PacketReader,
  ProtocolError,
  Version,
  bodyText,
  chooseProtover,
  encodePacket,
  jsonBody,
  messageBodies,
  nativeZlib,
  onlineCount,
  splitPackets,
} from '../dist/danmu-client.js';

const fixture = JSON.parse(readFileSync(new URL('fixtures/frames.json', import.meta.url), 'utf8'));
// The browser has no brotli in DecompressionStream; here node's zlib stands in for the decoder a
// page would pass as `decompressors.brotli`.
const decompressors = { zlib: nativeZlib(), brotli: async (b) => new Uint8Array(brotliDecompressSync(b)) };
const hex = (s) => Uint8Array.from(s.trim().split(/\s+/).map((h) => parseInt(h, 16)));

/** Every packet of every frame a connection received, with messages decoded. */
async function decode(connection) {
  const out = { authCodes: [], online: [], messages: [], batchSizes: [], upstream: new Map(), versions: new Set() };
  for (const b64 of connection.frames) {
    for (const packet of splitPackets(new Uint8Array(Buffer.from(b64, 'base64')))) {
      switch (packet.op) {
        case Op.AUTH_REPLY:
          out.authCodes.push(jsonBody(packet).code);
          break;
        case Op.HEARTBEAT_REPLY:
          out.online.push(onlineCount(packet));
          break;
        case Op.MESSAGE: {
          out.versions.add(packet.version);
          const bodies = await messageBodies(packet, decompressors);
          out.batchSizes.push(bodies.length);
          out.messages.push(...bodies.map(bodyText));
          break;
        }
        case Op.UPSTREAM_REPLY:
          out.upstream.set(packet.seq, jsonBody(packet));
          break;
        default:
          assert.fail(`unexpected op ${packet.op} for a client that opted in to nothing but upstream`);
      }
    }
  }
  return out;
}

test('the fixture holds all three protovers', () => {
  assert.deepEqual(fixture.connections.map((c) => c.protover), [0, 2, 3]);
  for (const c of fixture.connections) assert.ok(c.frames.length > 3, `protover ${c.protover}: ${c.frames.length} frames`);
});

for (const connection of fixture.connections) {
  test(`recorded protover ${connection.protover} frames decode to what was published`, async () => {
    const got = await decode(connection);
    assert.deepEqual(got.authCodes, [0]);
    assert.ok(got.online.length >= 1 && got.online.every((n) => n >= 1), `online counts ${got.online}`);
    // The gateway sends what was asked for: raw packets for 0, batches of that version otherwise.
    assert.deepEqual([...got.versions], [connection.protover]);
    for (const { payload } of fixture.published) {
      assert.equal(got.messages.filter((m) => m === payload).length, 1, `exactly once: ${payload}`);
    }
    // The lone comment and the burst keep their order (one room, one low-priority stream).
    const lo = fixture.published.filter((p) => p.subject.includes('.lo.')).map((p) => p.payload);
    assert.deepEqual(got.messages.filter((m) => lo.includes(m)), lo);
  });
}

test('a compressed burst arrives as batches of several messages', async () => {
  for (const connection of fixture.connections.filter((c) => c.protover !== 0)) {
    const got = await decode(connection);
    assert.ok(Math.max(...got.batchSizes) > 1, `protover ${connection.protover}: batch sizes ${got.batchSizes}`);
  }
});

test('upstream replies and the echo were recorded', async () => {
  const got = await decode(fixture.connections[0]);
  for (const { seq, msg } of fixture.upstream) {
    assert.equal(got.upstream.get(seq)?.code, 0, `reply to ${seq}`);
    const echo = got.messages.map((m) => JSON.parse(m)).find((m) => m.cmd === 'DANMU_MSG' && m.info?.[1] === msg);
    assert.ok(echo, `echo of "${msg}" in the room`);
    assert.equal(echo.info[2][0], fixture.uid);
  }
});

test('encodePacket writes the header of docs/protocol.md', () => {
  // UPSTREAM example: 00 00 00 39 00 10 00 01 00 00 03 ec 00 00 00 07 | {"msg":"hello",...}
  const packet = encodePacket(Op.UPSTREAM, Version.CONTROL, 7, '{"msg":"hello","color":16777215,"mode":1}');
  assert.deepEqual(packet.subarray(0, HEADER_LEN), hex('00 00 00 39 00 10 00 01 00 00 03 ec 00 00 00 07'));
  assert.deepEqual(encodePacket(Op.HEARTBEAT, Version.CONTROL, 1), hex('00 00 00 10 00 10 00 01 00 00 00 02 00 00 00 01'));
});

test('the byte examples of docs/protocol.md decode (versions 3 and 2)', async () => {
  const v3 = hex(`00 00 00 46 00 10 00 03 00 00 00 05 00 00 00 00
    81 28 02 00 20 96 b7 2b ba 90 4f 69 9a ed f9 09 af 20 0b 54 21 99 56 44 16 81 a8 92 c8 62 19 40
    80 07 5c 47 8f fb 1e 46 4a 6a 36 97 75 e5 df aa e7 26 4b 6b 19 fc`);
  const v2 = hex(`00 00 00 44 00 10 00 02 00 00 00 05 00 00 00 00
    78 9c 63 60 60 50 66 10 60 00 01 56 10 51 ad 94 9c 9b a2 64 a5 e4 e2 e8 e7 1b 1a ef 1b ec ae 54
    cb 80 43 49 b0 ab 9f 4b bc bb a7 5b 88 52 2d 00 4d 0e 0b bb`);
  for (const frame of [v3, v2]) {
    const [packet] = splitPackets(frame);
    const bodies = (await messageBodies(packet, decompressors)).map(bodyText);
    assert.deepEqual(bodies, ['{"cmd":"DANMU_MSG"}', '{"cmd":"SEND_GIFT"}']);
  }
});

test('bad input is a ProtocolError, not a crash', async () => {
  const good = encodePacket(Op.MESSAGE, Version.RAW, 0, '{"cmd":"X"}');
  assert.throws(() => splitPackets(good.subarray(0, 10)), ProtocolError, 'truncated header');
  assert.throws(() => splitPackets(good.subarray(0, good.length - 1)), ProtocolError, 'truncated body');
  const badHeader = good.slice();
  badHeader[5] = 12;
  assert.throws(() => splitPackets(badHeader), ProtocolError, 'header length 12');
  const [heartbeat] = splitPackets(encodePacket(Op.HEARTBEAT_REPLY, Version.CONTROL, 1, new Uint8Array(3)));
  assert.throws(() => onlineCount(heartbeat), ProtocolError);
  const [brotli] = splitPackets(encodePacket(Op.MESSAGE, Version.BROTLI, 0, new Uint8Array([1, 2, 3])));
  await assert.rejects(messageBodies(brotli, { zlib: nativeZlib() }), ProtocolError, 'no brotli decoder');
  await assert.rejects(messageBodies(brotli, decompressors), ProtocolError, 'not brotli');
});

test('the protover follows the decoders given', () => {
  assert.equal(chooseProtover({}), 0);
  assert.equal(chooseProtover({ zlib: nativeZlib() }), 2);
  assert.equal(chooseProtover(decompressors), 3);
});

test('PacketReader gives whole packets from chunks cut anywhere', () => {
  const a = encodePacket(Op.AUTH_REPLY, Version.CONTROL, 1, '{"code":0}');
  const b = encodePacket(Op.MESSAGE, Version.RAW, 0, '{"cmd":"X"}');
  const stream = new Uint8Array([...a, ...b]);
  for (let cut = 0; cut <= stream.length; cut++) {
    for (let cut2 = cut; cut2 <= stream.length; cut2 += 7) {
      const reader = new PacketReader();
      const ops = [];
      for (const chunk of [stream.subarray(0, cut), stream.subarray(cut, cut2), stream.subarray(cut2)]) {
        const run = reader.push(chunk);
        if (run) ops.push(...splitPackets(run).map((p) => p.op));
      }
      assert.deepEqual(ops, [Op.AUTH_REPLY, Op.MESSAGE], `cut at ${cut}, ${cut2}`);
    }
  }
});

test('PacketReader refuses a bad header at once', () => {
  const bad = encodePacket(Op.MESSAGE, Version.RAW, 0, 'x');
  new DataView(bad.buffer).setUint16(4, 12);
  assert.throws(() => new PacketReader().push(bad.subarray(0, 6)), ProtocolError);
  const huge = encodePacket(Op.MESSAGE, Version.RAW, 0, 'x');
  new DataView(huge.buffer).setUint32(0, 0xffff_ffff);
  assert.throws(() => new PacketReader().push(huge), ProtocolError);
});
