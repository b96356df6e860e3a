// The demo page in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// against a real two-region fabric: `web-fabric` (tests/src/bin/web-fabric.rs) started here on
// free ports, real nats-server processes, our gateway, distributor and control.
//
//   WEB_FABRIC_BIN=target/debug/web-fabric node --test test/browser.test.mjs    (from web/)
//
// scripts/test-web builds what it needs and runs this. Screenshots go to web/test-output/
// (git-ignored). Every wait has a deadline; running out of time fails the test.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const FABRIC_BIN = process.env.WEB_FABRIC_BIN;
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const OUT = new URL('../test-output/', import.meta.url).pathname;
const ROOM = 1001;
mkdirSync(OUT, { recursive: true });

let fabric; // { control, nats: {A, B}, ws: {A, B} }
let fabricProcess;
let fabricLines;
let browser;
const pages = [];

/**
 * Publishes JSON payloads through NATS with nats-py (installed by scripts/install-deps). A
 * DANMU_MSG's send time (`info[0][4]`) is stamped right before its publish, so the page's
 * latency readout measures publish to screen, not the publisher's start-up.
 */
const publishPy = `
import asyncio, json, sys, time, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    for subject, payload in json.loads(sys.argv[2]):
        info = payload.get("info")
        if isinstance(info, list) and info and isinstance(info[0], list) and len(info[0]) >= 5:
            info[0][4] = int(time.time() * 1000)
        await nc.publish(subject, json.dumps(payload, ensure_ascii=False).encode())
    await nc.flush()
    await nc.close()
asyncio.run(main())
`;
async function publish(region, messages) {
  await promisify(execFile)('python3', ['-c', publishPy, fabric.nats[region], JSON.stringify(messages)]);
}
const danmu = (text, uid = 5) => ({ cmd: 'DANMU_MSG', info: [[0, 1, 25, 0xffd700, Date.now()], text, [uid, `viewer${uid}`]] });

async function nextLine(timeoutMs, what) {
  const line = await Promise.race([
    fabricLines.next(),
    new Promise((_, reject) => setTimeout(() => reject(new Error(`web-fabric: no ${what} within ${timeoutMs} ms`)), timeoutMs)),
  ]);
  if (line.done) throw new Error(`web-fabric exited before ${what}`);
  return line.value;
}

/** Opens the demo page; records console errors and page errors into `page.problems`. */
async function openPage(query, viewport = { width: 1280, height: 720 }) {
  const page = await browser.newPage({ viewport });
  page.problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  await page.goto(`${fabric.control}/demo/?${query}`);
  pages.push(page);
  return page;
}

const connected = (page, timeout = 15_000) => page.waitForFunction(() => document.getElementById('state')?.textContent?.startsWith('connected'), null, { timeout });
const bullet = (page, text, timeout) => page.waitForFunction((t) => [...document.querySelectorAll('#stage .bullet')].some((b) => b.textContent === t), text, { timeout });

before(async () => {
  assert.ok(FABRIC_BIN, 'WEB_FABRIC_BIN must name the web-fabric binary (scripts/test-web sets it)');
  fabricProcess = spawn(FABRIC_BIN, [], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
  fabricLines = createInterface({ input: fabricProcess.stdout })[Symbol.asyncIterator]();
  fabric = JSON.parse(await nextLine(90_000, 'fabric address line'));
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

test('the page loads and connects with no console error', async () => {
  const page = await openPage(`room=${ROOM}&uid=11`);
  await connected(page);
  const state = await page.textContent('#state');
  assert.match(state, /region A · ws · protover 2/);
  await page.waitForFunction(() => /^[0-9]+$/.test(document.getElementById('online').textContent), null, { timeout: 5000 });
  assert.deepEqual(page.problems, []);
});

test('a message published through NATS is on the stage within a second', async () => {
  const page = pages[0];
  const text = `published ${Date.now()}`;
  const started = Date.now();
  const publishing = publish('A', [[`danmu.push.lo.room.${ROOM}`, danmu(text)]]);
  // The deadline counts from the publish: the python client's own start-up is not the fabric's.
  await publishing;
  await bullet(page, text, 1000);
  console.log(`  on stage ${Date.now() - started} ms after starting the publisher`);
  // It flies: still on the stage a second later (the old page removed it in the frame it came).
  await page.waitForTimeout(1000);
  assert.ok(await page.$(`#stage .bullet >> text="${text}"`), 'the comment is still flying after 1 s');
  const box = await page.locator('#stage .bullet', { hasText: text }).boundingBox();
  const stage = await page.locator('#stage').boundingBox();
  assert.ok(box.x < stage.x + stage.width && box.x + box.width > stage.x, `inside the stage: ${JSON.stringify(box)}`);
  await page.screenshot({ path: `${OUT}stage-published.png` });
  // The readout: publish (stamped in the message) to screen, on loopback well under a second.
  const latency = await page.textContent('#latency');
  assert.match(latency, /^[0-9]+ ms$/);
  assert.ok(parseInt(latency, 10) < 1000, `latency readout ${latency}`);
  console.log(`  latency readout ${latency}`);
  assert.deepEqual(page.problems, []);
});

test('a danmu sent from the box comes back into the room', async () => {
  const page = pages[0];
  const text = `from the box ${Date.now() % 100000}`;
  await page.fill('#text', text);
  await page.click('#send');
  await page.waitForFunction(() => document.getElementById('reply').textContent.includes(': sent (code 0)'), null, { timeout: 5000 });
  await page.waitForSelector(`#stage .bullet.mine >> text="${text}"`, { timeout: 3000 });
  assert.deepEqual(page.problems, []);
});

test('a gift and a high-priority notice render as cards', async () => {
  const page = pages[0];
  const notice = `Stream ends in ${Date.now() % 1000} minutes`;
  await publish('A', [
    [`danmu.push.lo.room.${ROOM}`, { cmd: 'SEND_GIFT', data: { uname: 'gifter', giftName: 'Rocket', num: 3, price: 500, action: 'sent', uid: 9 } }],
    [`danmu.push.hi.room.${ROOM}`, { cmd: 'NOTICE_MSG', title: 'Notice', msg: notice }],
  ]);
  await page.waitForSelector('#cards .card.gift >> text=/gifter sent Rocket ×3/', { timeout: 3000 });
  await page.waitForSelector(`#cards .card.notice >> text="Notice: ${notice}"`, { timeout: 3000 });
  const raw = await page.$$eval('#cards .card', (cards) => cards.filter((c) => c.textContent.includes('{')).length);
  assert.equal(raw, 0, 'no raw JSON in the cards');
});

test('the online count is fresh within 2 s of a join', async () => {
  const page = pages[0];
  const online = async (p) => Number(await p.textContent('#online'));
  // Settle: the count no longer changes (earlier pages of other tests are gone or counted).
  let before = await online(page);
  const second = await openPage(`room=${ROOM}&uid=12`);
  await connected(second);
  const joined = Date.now();
  await page.waitForFunction((n) => Number(document.getElementById('online').textContent) >= n + 1, before, { timeout: 2000 });
  console.log(`  count ${before} -> ${await online(page)} on the first page ${Date.now() - joined} ms after the join`);
  // The new viewer's own first count includes them.
  assert.ok((await online(second)) >= before + 1, `second page shows ${await online(second)}, first had ${before}`);

  // With members on another gateway (region B), a viewer joining here is still in their own
  // first count: the sums from control are a round trip behind, this gateway's share is not.
  const far = await openPage(`room=${ROOM}&uid=16&region=B`);
  await connected(far);
  await page.waitForFunction((n) => Number(document.getElementById('online').textContent) === n, before + 2, { timeout: 3000 });
  const third = await browser.newPage();
  // The first count the page shows, before a second heartbeat could refresh it.
  await third.goto(`${fabric.control}/demo/?room=${ROOM}&uid=17&region=A`);
  const first = await third.waitForFunction(() => {
    const text = document.getElementById('online').textContent;
    return /^[0-9]+$/.test(text) ? Number(text) : false;
  }, null, { timeout: 5000, polling: 10 });
  assert.equal(await first.jsonValue(), before + 3, 'the first count includes the viewer who just joined');
  await third.close();
  await far.close();
  await second.close();
});

test('two pages in two regions see each other\'s danmu', async () => {
  const a = pages[0];
  const b = await openPage(`room=${ROOM}&uid=13&region=B`);
  await connected(b);
  assert.match(await b.textContent('#state'), /region B/);
  const fromB = `from region B ${Date.now() % 100000}`;
  await b.fill('#text', fromB);
  await b.press('#text', 'Enter');
  await bullet(a, fromB, 5000);
  const fromA = `from region A ${Date.now() % 100000}`;
  await a.fill('#text', fromA);
  await a.press('#text', 'Enter');
  await bullet(b, fromA, 5000);
  assert.deepEqual(b.problems, []);
  await b.close();
});

test('bad parameters get a clear message, not a retry loop', async () => {
  const room = await openPage('room=abc');
  await room.waitForSelector('#banner.show', { timeout: 5000 });
  assert.match(await room.textContent('#banner'), /\?room=abc is not valid: room must be a positive whole number/);
  assert.doesNotMatch(await room.textContent('#stage-label'), /NaN/);
  const region = await openPage(`room=${ROOM}&region=Z`);
  await region.waitForSelector('#banner.show', { timeout: 5000 });
  // Control refuses a region nobody serves (404), and the page says what control said.
  assert.match(await region.textContent('#banner'), /HTTP 404: unknown region "Z".*configured regions: A, B/);
  await region.waitForTimeout(1500);
  assert.match(await region.textContent('#state'), /^failed/);
  await room.close();
  await region.close();
});

test('the layout holds at phone width', async () => {
  const phone = await openPage(`room=${ROOM}&uid=14`, { width: 390, height: 844 });
  await connected(phone);
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling: ${overflow}px too wide`);
  for (const id of ['stage', 'cards', 'text', 'send', 'online']) {
    const box = await phone.locator(`#${id}`).boundingBox();
    assert.ok(box && box.width > 0 && box.x >= 0 && box.x + box.width <= 391, `#${id} on screen: ${JSON.stringify(box)}`);
  }
  await publish('A', Array.from({ length: 8 }, (_, i) => [`danmu.push.lo.room.${ROOM}`, danmu(`phone ${i}`, 20 + i)]));
  await bullet(phone, 'phone 7', 3000);
  await phone.waitForTimeout(2500); // well onto the stage
  await phone.screenshot({ path: `${OUT}phone.png` });
  await phone.close();
});

test('a busy stage: comments fly in lanes without overlap', async () => {
  const page = pages[0];
  const texts = ['签到', '主播好厉害！', 'hello from Berlin', '哈哈哈哈哈哈', '666', '这波操作可以', 'gg', '前方高能', 'first time here, love it', '来了来了', 'awesome play', '弹幕护体'];
  const batch = Array.from({ length: 36 }, (_, i) => [`danmu.push.lo.room.${ROOM}`, { ...danmu(texts[i % texts.length], 100 + i), info: [[0, 1, 25, [0xffffff, 0xfb7299, 0x4cd49a, 0xf5b94c, 0x9fd0ff][i % 5], Date.now()], texts[i % texts.length], [100 + i, 'v']] }]);
  batch.splice(10, 0, [`danmu.push.lo.room.${ROOM}`, { cmd: 'SEND_GIFT', data: { uname: '小明', giftName: '小电视', num: 1, price: 1245, action: '投喂', uid: 8 } }]);
  await publish('A', batch.slice(0, 18));
  await page.waitForTimeout(1200);
  await publish('A', batch.slice(18));
  await page.waitForFunction(() => document.querySelectorAll('#stage .bullet').length >= 20, null, { timeout: 3000 });
  await page.waitForTimeout(1500);
  // No two comments in one lane overlap (their boxes, now).
  const overlaps = await page.$$eval('#stage .bullet', (els) => {
    const boxes = els.map((e) => e.getBoundingClientRect()).filter((r) => r.right > 0);
    let n = 0;
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++) {
        const [p, q] = [boxes[i], boxes[j]];
        if (Math.abs(p.top - q.top) < 1 && p.left < q.right && q.left < p.right) n++;
      }
    return n;
  });
  assert.equal(overlaps, 0, 'overlapping comments in a lane');
  console.log(`  ${await page.$$eval('#stage .bullet', (els) => els.length)} comments on stage, latency readout ${await page.textContent('#latency')}`);
  await page.screenshot({ path: `${OUT}busy-stage.png` });
});

test('the page reconnects after its gateway restarts', async () => {
  const page = await openPage(`room=${ROOM}&uid=15&region=A`);
  await connected(page);
  fabricProcess.stdin.write('restart A\n');
  await page.waitForFunction(() => !document.getElementById('state').textContent.startsWith('connected'), null, { timeout: 15_000 });
  assert.equal(await nextLine(30_000, 'restart confirmation'), 'restarted A');
  await connected(page, 20_000);
  const text = `after the restart ${Date.now() % 100000}`;
  await publish('A', [[`danmu.push.lo.room.${ROOM}`, danmu(text)]]);
  await bullet(page, text, 3000);
  // Reconnecting logs nothing as an error: a restart is expected life.
  assert.deepEqual(page.problems.filter((p) => !p.includes('WebSocket')), []);
});
