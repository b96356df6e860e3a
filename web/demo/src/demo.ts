/**
 * The demo page on the client library: a stage of flying comments in lanes, cards for gifts and
 * notices, a send box, and the connection's state, online count and latency.
 */

import { DanmuClient, demoToken, fetchNodes, type StateEvent } from '../../client/src/index.js';
import { Stage } from './stage.js';
import { cardFor } from './cards.js';

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

/** Page parameters, or the message that says which one is wrong. */
interface Params {
  control: string;
  room: number;
  region: string | undefined;
  uid: number;
}

function positiveInt(name: string, raw: string | null, fallback: () => number): number {
  if (raw === null || raw === '') return fallback();
  if (!/^[0-9]+$/.test(raw) || !Number.isSafeInteger(Number(raw)) || Number(raw) <= 0) {
    throw new Error(`?${name}=${raw} is not valid: ${name} must be a positive whole number, e.g. ?${name}=1001`);
  }
  return Number(raw);
}

function readParams(): Params {
  const query = new URLSearchParams(location.search);
  const origin = location.protocol.startsWith('http') ? location.origin : 'http://127.0.0.1:8080';
  const region = query.get('region') ?? undefined;
  if (region !== undefined && !/^[A-Za-z0-9_-]{1,32}$/.test(region)) {
    throw new Error(`?region=${region} is not valid: a region is a name such as A or B`);
  }
  return {
    control: (query.get('control') ?? origin).replace(/\/+$/, ''),
    room: positiveInt('room', query.get('room'), () => 1001),
    region: region || undefined,
    uid: positiveInt('uid', query.get('uid'), () => 1 + Math.floor(Math.random() * 2_000_000_000)),
  };
}

function showError(message: string): void {
  const banner = $('banner');
  banner.textContent = message;
  banner.classList.add('show');
}

/** The publish time a message carries, in unix ms: DANMU_MSG `info[0][4]`, or `ts_ms`. */
function sentAt(data: Record<string, unknown>): number | undefined {
  const info = data['info'];
  if (Array.isArray(info) && Array.isArray(info[0]) && typeof info[0][4] === 'number') return info[0][4];
  if (typeof data['ts_ms'] === 'number') return data['ts_ms'];
  return undefined;
}

function colorOf(n: unknown): string | undefined {
  return typeof n === 'number' ? '#' + (n & 0xffffff).toString(16).padStart(6, '0') : undefined;
}

async function main(): Promise<void> {
  let params: Params;
  try {
    params = readParams();
  } catch (e) {
    showError((e as Error).message);
    setState('failed', 'bad page parameters');
    return;
  }
  $('stage-label').textContent = `ROOM ${params.room}`;
  document.title = `danmu · room ${params.room}`;

  // A region hint control has no gateway for would silently land elsewhere: say so instead.
  if (params.region) {
    try {
      const list = await fetchNodes(params.control, { region: params.region });
      const regions = [...new Set(list.nodes.map((n) => n.region))];
      if (!regions.includes(params.region)) {
        showError(
          `No gateway in region "${params.region}". ` +
            (regions.length ? `Regions with gateways: ${regions.join(', ')} (e.g. ?region=${regions[0]}).` : 'Control lists no gateway at all yet.'),
        );
        setState('failed', `region ${params.region} unknown`);
        return;
      }
    } catch (e) {
      showError(`Control at ${params.control}: ${(e as Error).message}`);
      setState('failed', 'control refused the region');
      return;
    }
  }

  const client = new DanmuClient({
    control: params.control,
    room: params.room,
    uid: params.uid,
    region: params.region,
    token: ({ uid, room }) => demoToken(params.control, uid, [room]),
    // A fresh online count: a reply every second instead of every 30 s (the gateway answers
    // from a table; a heartbeat costs 16 bytes up and 20 down).
    heartbeatMs: 1_000,
  });
  const stage = new Stage($('stage'));
  const arrivals: number[] = [];
  const latencies: number[] = [];
  const mine = new Set<string>();

  client.on('state', (s) => renderState(s, client.protover));
  client.on('online', (count) => ($('online').textContent = String(count)));
  client.on('error', (e) => console.warn('danmu:', e.message));
  client.on('drain', (d) => console.info('danmu: gateway draining:', d.reason));
  client.on('message', ({ data }) => {
    arrivals.push(performance.now());
    if (typeof data !== 'object' || data === null) return;
    const message = data as Record<string, unknown>;
    const at = sentAt(message);
    if (at !== undefined) {
      latencies.push(Date.now() - at);
      if (latencies.length > 20) latencies.shift();
    }
    if (message['cmd'] === 'DANMU_MSG') {
      const info = Array.isArray(message['info']) ? (message['info'] as unknown[]) : [];
      const meta = Array.isArray(info[0]) ? (info[0] as unknown[]) : [];
      const text = typeof info[1] === 'string' ? info[1] : typeof message['msg'] === 'string' ? (message['msg'] as string) : '';
      if (!text) return;
      const sender = Array.isArray(info[2]) ? (info[2] as unknown[])[0] : undefined;
      const ours = sender === params.uid && mine.delete(text);
      stage.fly(text, colorOf(meta[3] ?? message['color']), ours);
      return;
    }
    const card = cardFor(message);
    if (card) {
      const list = $('cards');
      list.prepend(card);
      while (list.children.length > 50) list.lastElementChild?.remove();
    }
  });

  setInterval(() => {
    const now = performance.now();
    while (arrivals.length && now - arrivals[0]! > 5000) arrivals.shift();
    $('rate').textContent = (arrivals.length / 5).toFixed(1);
    if (latencies.length) {
      const sorted = [...latencies].sort((a, b) => a - b);
      $('latency').textContent = `${Math.max(0, sorted[Math.floor(sorted.length / 2)]!)} ms`;
    }
  }, 500);

  const input = $<HTMLInputElement>('text');
  const send = async () => {
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    const reply = $('reply');
    reply.className = '';
    reply.textContent = `Sending “${text}”…`;
    try {
      mine.add(text);
      const r = await client.send(text);
      let detail = '';
      if (r.code === 1 && r.msg) detail = `, shown as “${r.msg}”`;
      if (r.retry_after_ms !== undefined) detail = `; try again in ${(r.retry_after_ms / 1000).toFixed(1)} s`;
      if (r.max_chars !== undefined) detail = `; at most ${r.max_chars} characters`;
      reply.className = r.code >= 0 ? 'ok' : 'err';
      reply.textContent = `“${text}”: ${r.meaning}${detail} (code ${r.code})`;
      if (r.code === 1 && r.msg) mine.add(r.msg);
    } catch (e) {
      reply.className = 'err';
      reply.textContent = `“${text}” not sent: ${(e as Error).message}`;
    }
  };
  $('send').addEventListener('click', () => void send());
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') void send();
  });
  client.start();
}

function setState(phase: string, detail: string): void {
  $('dot').className = `dot ${phase}`;
  $('state').textContent = detail ? `${phase}: ${detail}` : phase;
}

function renderState(s: StateEvent, protover: number): void {
  ($('send') as HTMLButtonElement).disabled = s.phase !== 'connected';
  switch (s.phase) {
    case 'connected':
      setState('connected', `${s.node?.node_id} · region ${s.node?.region} · ${s.transport} · protover ${protover}`);
      $('banner').classList.remove('show');
      break;
    case 'connecting':
      setState('connecting', s.url ? `${s.url}` : 'asking control for nodes');
      break;
    case 'waiting':
      setState('waiting', `${s.error}; retrying in ${((s.retryInMs ?? 0) / 1000).toFixed(1)} s`);
      break;
    case 'failed':
      setState('failed', s.error ?? '');
      showError(s.error ?? 'cannot connect');
      break;
    case 'closed':
      setState('closed', '');
      break;
  }
}

void main();
