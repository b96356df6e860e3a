// The library over WebTransport in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) against a real fabric whose gateways serve QUIC and WebTransport on a
// self-signed certificate that Chromium accepts by its hash (`web-fabric --webtransport`):
// the demo page (the library with its default transports) connects over WebTransport and
// receives a room message; when WebTransport fails (the node list's certificate hash made
// wrong on the way to the page), it falls back to WebSocket by itself.
//
//   WEB_FABRIC_BIN=target/debug/web-fabric node --test test/webtransport.test.mjs    (from web/)
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const FABRIC_BIN = process.env.WEB_FABRIC_BIN;
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const ROOM = 1002;

let fabric;
let fabricProcess;
let fabricLines;
let browser;

async function publish(text) {
  const py = `
import asyncio, json, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    await nc.publish(sys.argv[2], sys.argv[3].encode())
    await nc.flush()
    await nc.close()
asyncio.run(main())
`;
  const payload = JSON.stringify({ cmd: 'DANMU_MSG', info: [[0, 1, 25, 0xffffff, Date.now()], text, [5, 'viewer5']] });
  await promisify(execFile)('python3', ['-c', py, fabric.nats.A, `danmu.push.lo.room.${ROOM}`, payload]);
}

async function openPage(uid, nodes) {
  const page = await browser.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => console.log(`  console ${m.type()}: ${m.text()}`));
  if (nodes) {
    await page.route('**/v1/nodes*', async (route) => {
      const response = await route.fetch();
      const body = await response.json();
      body.nodes = body.nodes.map(nodes);
      await route.fulfill({ response, json: body });
    });
  }
  await page.goto(`${fabric.control}/demo/?room=${ROOM}&uid=${uid}&region=A`);
  return page;
}

const connectedOver = (page, timeout = 15_000) =>
  page.waitForFunction(() => {
    const state = document.getElementById('state')?.textContent ?? '';
    return state.startsWith('connected') ? state : false;
  }, null, { timeout }).then((handle) => handle.jsonValue());
const bullet = (page, text, timeout = 5000) =>
  page.waitForFunction((t) => [...document.querySelectorAll('#stage .bullet')].some((b) => b.textContent === t), text, { timeout });

before(async () => {
  assert.ok(FABRIC_BIN, 'WEB_FABRIC_BIN must name the web-fabric binary (scripts/test-web sets it)');
  fabricProcess = spawn(FABRIC_BIN, ['--webtransport'], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
  fabricLines = createInterface({ input: fabricProcess.stdout })[Symbol.asyncIterator]();
  const line = await Promise.race([
    fabricLines.next(),
    new Promise((_, reject) => setTimeout(() => reject(new Error('web-fabric: no address line within 90 s')), 90_000)),
  ]);
  fabric = JSON.parse(line.value);
  assert.ok(fabric.webtransport.A, 'gateway A serves WebTransport');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
});

after(async () => {
  await browser?.close();
  if (fabricProcess && fabricProcess.exitCode === null) {
    fabricProcess.stdin.end('quit\n');
    const exited = new Promise((resolve) => fabricProcess.once('exit', resolve));
    const timer = setTimeout(() => fabricProcess.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
});

test('the page connects over WebTransport and receives a room message', async () => {
  const page = await openPage(21);
  const state = await connectedOver(page);
  assert.match(state, /· webtransport ·/);
  const text = `over webtransport ${Date.now()}`;
  await publish(text);
  await bullet(page, text);
  assert.deepEqual(page.problems, []);
});

test('when WebTransport fails, the page falls back to WebSocket by itself', async () => {
  const started = Date.now();
  // A hash no certificate has: Chromium refuses the gateway's certificate.
  const page = await openPage(22, (node) => ({ ...node, cert_sha256: '00'.repeat(32) }));
  const state = await connectedOver(page);
  console.log(`  connected over WebSocket ${Date.now() - started} ms after opening the page`);
  assert.match(state, /· ws ·/);
  const text = `after the fallback ${Date.now()}`;
  await publish(text);
  await bullet(page, text);
  assert.deepEqual(page.problems, []);
});
