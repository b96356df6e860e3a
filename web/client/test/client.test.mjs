// DanmuClient's behaviour, driven through its Transport interface by a scripted gateway (plain
// bytes in and out) and a stubbed control answer: reconnect across the node list, final AUTH
// codes, DRAIN, upstream replies. The real thing (our gateway, a real browser) is covered by
// web/test/browser.test.mjs; this pins the rules in milliseconds.
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { DanmuClient, Op, Version, WebSocketTransport, WebTransportTransport, encodePacket, jsonBody, splitPackets } from '../dist/danmu-client.js';

const nodes = ['gw-1', 'gw-2', 'gw-3'].map((id) => ({ node_id: id, region: 'A', ws: `${id}:1`, wss: '', tcp: '', tls: '', quic: '', load: 0 }));
const realFetch = globalThis.fetch;
afterEach(() => (globalThis.fetch = realFetch));
function stubControl(list = nodes) {
  globalThis.fetch = async (url) => {
    assert.match(String(url), /\/v1\/nodes\?/);
    return new Response(JSON.stringify({ region: 'A', policy: { mode: 'long_connection' }, nodes: list, ttl_secs: 15 }));
  };
}

/** A scripted gateway per node: `behaviour[node_id]` says how it answers AUTH. */
function fakeTransport(behaviour) {
  const log = [];
  const live = new Map();
  return {
    log,
    live,
    transport: {
      name: 'fake',
      address: (node) => `fake://${node.node_id}`,
      async open(url, handlers) {
        const id = url.slice('fake://'.length);
        log.push(id);
        const how = behaviour[id] ?? 'ok';
        if (how === 'refuse') throw new Error(`${id}: refused`);
        const reply = (op, body, seq = 1) => queueMicrotask(() => handlers.onFrame(encodePacket(op, Version.CONTROL, seq, body)));
        const connection = {
          transport: 'fake',
          url,
          sent: [],
          send(frame) {
            for (const p of splitPackets(frame)) {
              connection.sent.push(p.op);
              // 'silent': open, but AUTH is never answered (a stalled stream).
              if (p.op === Op.AUTH && how !== 'silent') reply(Op.AUTH_REPLY, JSON.stringify({ code: how === 'ok' ? 0 : how }));
              if (p.op === Op.HEARTBEAT) {
                const count = new Uint8Array(4);
                new DataView(count.buffer).setUint32(0, 42);
                reply(Op.HEARTBEAT_REPLY, count);
              }
              if (p.op === Op.UPSTREAM) {
                const { msg } = jsonBody(p);
                reply(Op.UPSTREAM_REPLY, JSON.stringify(msg === 'spam' ? { code: -201, retry_after_ms: 800 } : { code: 0, id: 'x-1' }), p.seq);
              }
            }
          },
          close: (code = 1000, reason = '') => queueMicrotask(() => handlers.onClose({ code, reason })),
          // The gateway's side: a drain (op 1001 then close 1012), or a lost connection.
          drain() {
            handlers.onFrame(encodePacket(Op.DRAIN, Version.CONTROL, 1, '{"reason":"shutdown","reconnect_after_ms":0}'));
            handlers.onClose({ code: 1012, reason: 'service restart' });
          },
        };
        live.set(id, connection);
        return connection;
      },
    },
  };
}

function client(transport, extra = {}) {
  return new DanmuClient({
    control: 'http://control.test',
    room: 1001,
    uid: 42,
    token: async () => 'token',
    transports: [transport],
    backoffMinMs: 10,
    backoffMaxMs: 40,
    ...extra,
  });
}

/** Resolves with the first `state` event that matches, or fails after `ms`. */
function until(c, match, ms = 2000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no matching state within ${ms} ms`)), ms);
    const off = c.on('state', (s) => {
      if (match(s)) {
        clearTimeout(timer);
        off();
        resolve(s);
      }
    });
  });
}

test('connects, heartbeats at once, and reports the online count', async () => {
  stubControl();
  const fake = fakeTransport({});
  const c = client(fake.transport);
  const online = new Promise((resolve) => c.on('online', resolve));
  const connected = until(c, (s) => s.phase === 'connected');
  c.start();
  const state = await connected;
  assert.equal(state.node.node_id, 'gw-1');
  assert.equal(state.transport, 'fake');
  assert.equal(await online, 42);
  assert.deepEqual(fake.live.get('gw-1').sent, [Op.AUTH, Op.HEARTBEAT]);
  c.close();
});

test('moves along the node list with growing delays until one answers', async () => {
  stubControl();
  const fake = fakeTransport({ 'gw-1': 'refuse', 'gw-2': 'refuse' });
  const c = client(fake.transport);
  const waits = [];
  c.on('state', (s) => s.phase === 'waiting' && waits.push(s.retryInMs));
  const connected = until(c, (s) => s.phase === 'connected');
  c.start();
  assert.equal((await connected).node.node_id, 'gw-3');
  assert.deepEqual(fake.log, ['gw-1', 'gw-2', 'gw-3']);
  assert.equal(waits.length, 2);
  // Backoff 10 then 20 ms, the upper half random: [5, 10] then [10, 20].
  assert.ok(waits[0] >= 5 && waits[0] <= 10 && waits[1] >= 10 && waits[1] <= 20, `delays ${waits}`);
  c.close();
});

test('a refused room is final: no retry loop', async () => {
  stubControl();
  const fake = fakeTransport({ 'gw-1': -103 });
  const c = client(fake.transport);
  const failed = until(c, (s) => s.phase === 'failed');
  c.start();
  assert.match((await failed).error, /-103 \(room not allowed by the token\)/);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(fake.log, ['gw-1'], 'no second attempt');
});

test('an expired token is retried with a new one', async () => {
  stubControl([nodes[0]]);
  let tokens = 0;
  const behaviour = { 'gw-1': -102 };
  const fake = fakeTransport(behaviour);
  const c = client(fake.transport, {
    token: async () => {
      tokens += 1;
      if (tokens === 2) behaviour['gw-1'] = 'ok';
      return `token-${tokens}`;
    },
  });
  const connected = until(c, (s) => s.phase === 'connected');
  c.start();
  await connected;
  assert.equal(tokens, 2);
  c.close();
});

test('DRAIN moves the client to another node at once', async () => {
  stubControl();
  const fake = fakeTransport({});
  const c = client(fake.transport, { backoffMinMs: 10, backoffMaxMs: 60_000 });
  const drained = new Promise((resolve) => c.on('drain', resolve));
  let connected = until(c, (s) => s.phase === 'connected');
  c.start();
  await connected;
  connected = until(c, (s) => s.phase === 'connected', 500);
  fake.live.get('gw-1').drain();
  assert.equal((await drained).reason, 'shutdown');
  assert.equal((await connected).node.node_id, 'gw-2', 'not back to the draining node');
  c.close();
});

test('send resolves with the reply code in words', async () => {
  stubControl();
  const fake = fakeTransport({});
  const c = client(fake.transport);
  await assert.rejects(c.send('too early'), { name: 'NotConnectedError' });
  const connected = until(c, (s) => s.phase === 'connected');
  c.start();
  await connected;
  assert.deepEqual(await c.send('hello'), { code: 0, id: 'x-1', meaning: 'sent' });
  assert.deepEqual(await c.send('spam'), { code: -201, retry_after_ms: 800, meaning: 'rate limited' });
  c.close();
});

test('bad options are refused at construction', () => {
  const base = { control: 'http://c', uid: 1, token: async () => '' };
  assert.throws(() => new DanmuClient({ ...base, room: Number('abc') }), RangeError);
  assert.throws(() => new DanmuClient({ ...base, room: 0 }), RangeError);
  assert.throws(() => new DanmuClient({ ...base, room: 1, uid: 1.5 }), RangeError);
});

/** Two transports on one node: `first` behaves as `firstHow`, `second` answers. */
function twoTransports(firstHow, fallbackMs) {
  const first = fakeTransport({ 'gw-1': firstHow });
  const second = fakeTransport({});
  return {
    first,
    second,
    transports: [
      { ...first.transport, name: 'first', fallbackMs },
      { ...second.transport, name: 'second' },
    ],
  };
}

test('a transport that cannot open gives way to the next one at once, and goes last from then on', async () => {
  stubControl(nodes.slice(0, 1));
  const { first, second, transports } = twoTransports('refuse');
  const c = client(undefined, { transports });
  const waits = [];
  c.on('state', (s) => s.phase === 'waiting' && waits.push(s));
  const connected = until(c, (s) => s.phase === 'connected');
  c.start();
  assert.equal((await connected).transport, 'fake');
  assert.deepEqual([first.log, second.log], [['gw-1'], ['gw-1']]);
  assert.deepEqual(waits, [], 'no backoff between the transports');
  // The gateway goes away: the next attempt starts with the transport that worked.
  const again = until(c, (s) => s.phase === 'connected');
  second.live.get('gw-1').close(1006, '');
  await again;
  assert.deepEqual([first.log, second.log], [['gw-1'], ['gw-1', 'gw-1']]);
  c.close();
});

test('a transport that opens but stalls falls back within its fallbackMs', async () => {
  stubControl(nodes.slice(0, 1));
  const { first, second, transports } = twoTransports('silent', 50);
  const c = client(undefined, { transports, connectTimeoutMs: 5000 });
  const started = Date.now();
  const connected = until(c, (s) => s.phase === 'connected');
  c.start();
  await connected;
  const took = Date.now() - started;
  assert.deepEqual([first.log, second.log], [['gw-1'], ['gw-1']]);
  assert.ok(took < 2000, `fell back after ${took} ms, not the 5 s connect timeout`);
  c.close();
});

test('WebSocket dials wss from an HTTPS page, ws otherwise; WebTransport needs the node to offer it', () => {
  const node = { node_id: 'n', region: 'A', ws: 'h:1', wss: 'h:2', tcp: '', tls: '', quic: '', load: 0 };
  assert.equal(new WebSocketTransport({ secure: false }).address(node), 'ws://h:1/sub');
  assert.equal(new WebSocketTransport({ secure: true }).address(node), 'wss://h:2/sub');
  assert.equal(new WebSocketTransport({ secure: true }).address({ ...node, wss: '' }), undefined);
  assert.equal(new WebSocketTransport({ secure: false }).address({ ...node, ws: '' }), 'wss://h:2/sub');
  // Offered only where the runtime has WebTransport (Node.js has none) and the node lists it.
  const wt = new WebTransportTransport();
  assert.equal(wt.address({ ...node, webtransport: 'h:3' }), typeof WebTransport === 'function' ? 'https://h:3/sub' : undefined);
  assert.equal(wt.address(node), undefined);
});
