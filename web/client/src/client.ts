/**
 * `DanmuClient`: one viewer in one room. It asks control for nodes, connects over the first
 * transport a node offers, authenticates with a token from the caller's function, keeps the
 * heartbeat, decodes messages, reconnects with backoff and jitter across the node list, follows
 * DRAIN, and sends danmu upstream. Everything it learns comes out as typed events.
 */

import {
  Op,
  Version,
  ProtocolError,
  chooseProtover,
  encodePacket,
  jsonBody,
  messageBodies,
  nativeBrotli,
  nativeZlib,
  onlineCount,
  splitPackets,
  bodyText,
  type Decompressors,
  type Packet,
} from './codec.js';
import { ControlError, fetchNodes, type Node } from './control.js';
import { WebSocketTransport, WebTransportTransport, type Connection, type Transport } from './transport.js';
import { authMeaning, isFinalAuthCode, upstreamMeaning } from './codes.js';

/** Options of `DanmuClient`. Only `control`, `room`, `uid` and `token` are required. */
export interface DanmuClientOptions {
  /** Control's base URL, e.g. `http://127.0.0.1:8080`. */
  control: string;
  /** The room to enter (a positive integer). */
  room: number;
  /** The user id; must equal the token's. */
  uid: number;
  /** A region hint for the node list (`?region=`); omitted: control decides from the address. */
  region?: string;
  /** Returns a fresh token for `uid` and `room`; called before every connection attempt. */
  token: (who: { uid: number; room: number }) => Promise<string>;
  /**
   * Transports in order of preference; default WebTransport then WebSocket
   * (`[new WebTransportTransport(), new WebSocketTransport()]`): WebTransport where the browser
   * has it and the node offers it, WebSocket when it fails (within its `fallbackMs`).
   */
  transports?: Transport[];
  /**
   * Batch decoders. Default: the platform's `DecompressionStream`: brotli where it has that
   * format (protover 3), else zlib (protover 2). Give `brotli` (e.g. a wasm decoder) to ask for
   * protover 3 anywhere.
   */
  decompressors?: Decompressors;
  /** HEARTBEAT period in ms (default 30 000, as Bilibili clients). Each reply refreshes `online`. */
  heartbeatMs?: number;
  /** First reconnect delay in ms (default 500); doubles per failure up to `backoffMaxMs`. */
  backoffMinMs?: number;
  /** Longest reconnect delay in ms (default 15 000). */
  backoffMaxMs?: number;
  /** How long one attempt (open + AUTH_REPLY) may take, in ms (default 5 000). */
  connectTimeoutMs?: number;
  /** How long `send` waits for UPSTREAM_REPLY, in ms (default 5 000). */
  replyTimeoutMs?: number;
}

/** Where the client is. `failed` is final: a retry cannot help (bad room, refused token, ...). */
export type Phase = 'connecting' | 'connected' | 'waiting' | 'failed' | 'closed';

/** The `state` event. */
export interface StateEvent {
  phase: Phase;
  /** The gateway, when connected or connecting to one. */
  node?: Node;
  /** The transport's name (`webtransport`, `wss`, `ws`) and address, when connected. */
  transport?: string;
  url?: string;
  /** Why the client is waiting or failed. */
  error?: string;
  /** When waiting: ms until the next attempt. */
  retryInMs?: number;
  /** Consecutive failed attempts so far. */
  failures: number;
}

/** The `message` event: one business message (op 5). */
export interface MessageEvent {
  /** The JSON body, or undefined when the body is not JSON (then see `raw`). */
  data: unknown;
  raw: Uint8Array;
  /** `performance.now()` when its frame arrived. */
  receivedAt: number;
}

/** UPSTREAM_REPLY (docs/protocol.md, "Upstream danmu") with the code in words. */
export interface UpstreamReply {
  code: number;
  /** The code in words, e.g. `rate limited`. */
  meaning: string;
  id?: string;
  /** The text as forwarded (code 1, masked). */
  msg?: string;
  retry_after_ms?: number;
  max_chars?: number;
}

/** Events and their payloads. */
export interface DanmuEvents {
  state: StateEvent;
  message: MessageEvent;
  /** The room's online count from a HEARTBEAT_REPLY. */
  online: number;
  /** The gateway announced a drain (op 1001); the client reconnects elsewhere by itself. */
  drain: { reason: string; reconnectAfterMs: number };
  /** A frame that broke the protocol; the client closes that connection and reconnects. */
  error: Error;
}

type Listener<T> = (value: T) => void;

/** An attempt's failure that no retry can help (a final AUTH code). */
class FinalError extends Error {
  override name = 'FinalError';
}

/** Thrown by `send` when no connection is up. */
export class NotConnectedError extends Error {
  override name = 'NotConnectedError';
}

export class DanmuClient {
  readonly protover: 0 | 2 | 3;
  private readonly options: Required<Omit<DanmuClientOptions, 'region' | 'decompressors'>> &
    Pick<DanmuClientOptions, 'region'>;
  private readonly decompressors: Decompressors;
  private readonly listeners = new Map<keyof DanmuEvents, Set<Listener<never>>>();
  private connection: Connection | undefined;
  private node: Node | undefined;
  private phase: Phase = 'closed';
  private failures = 0;
  private attempt = 0;
  private avoid: string | undefined;
  /** Transports that failed on this client: tried after the others from then on. */
  private readonly broken = new Set<string>();
  private seq = 1;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private inbox: Promise<void> = Promise.resolve();
  private readonly pending = new Map<number, { resolve: (r: UpstreamReply) => void; timer: ReturnType<typeof setTimeout> }>();
  private stopped = true;

  constructor(options: DanmuClientOptions) {
    if (!Number.isSafeInteger(options.room) || options.room <= 0) {
      throw new RangeError(`room must be a positive integer, not ${String(options.room)}`);
    }
    if (!Number.isSafeInteger(options.uid) || options.uid <= 0) {
      throw new RangeError(`uid must be a positive integer, not ${String(options.uid)}`);
    }
    this.options = {
      transports: [new WebTransportTransport(), new WebSocketTransport()],
      heartbeatMs: 30_000,
      backoffMinMs: 500,
      backoffMaxMs: 15_000,
      connectTimeoutMs: 5_000,
      replyTimeoutMs: 5_000,
      ...options,
    };
    this.decompressors = options.decompressors ?? { zlib: nativeZlib(), brotli: nativeBrotli() };
    this.protover = chooseProtover(this.decompressors);
  }

  /** Subscribes to an event; returns the function that unsubscribes. */
  on<K extends keyof DanmuEvents>(type: K, listener: Listener<DanmuEvents[K]>): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => set.delete(listener as Listener<never>);
  }

  /** Starts connecting (and reconnecting until `close`). */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    void this.connect();
  }

  /** Closes the connection and stops reconnecting. */
  close(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.teardown();
    this.connection?.close(1000, 'closed by the page');
    this.connection = undefined;
    this.setState({ phase: 'closed', failures: this.failures });
  }

  /**
   * Sends a danmu (UPSTREAM, op 1004) and resolves with the gateway's UPSTREAM_REPLY. What
   * passes moderation reaches the room like any other message (when the gateway echoes it).
   * @throws NotConnectedError when not connected; rejects on no reply within `replyTimeoutMs`.
   */
  send(text: string, style: { color?: number; mode?: 1 | 4 | 5 } = {}): Promise<UpstreamReply> {
    const connection = this.connection;
    if (!connection || this.phase !== 'connected') return Promise.reject(new NotConnectedError('not connected'));
    const seq = this.nextSeq();
    const body = JSON.stringify({ msg: text, color: style.color ?? 0xffffff, mode: style.mode ?? 1 });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new Error(`no UPSTREAM_REPLY within ${this.options.replyTimeoutMs} ms`));
      }, this.options.replyTimeoutMs);
      this.pending.set(seq, { resolve, timer });
      connection.send(encodePacket(Op.UPSTREAM, Version.CONTROL, seq, body));
    });
  }

  private emit<K extends keyof DanmuEvents>(type: K, value: DanmuEvents[K]): void {
    for (const listener of this.listeners.get(type) ?? []) (listener as Listener<DanmuEvents[K]>)(value);
  }

  private setState(state: StateEvent): void {
    this.phase = state.phase;
    this.emit('state', state);
  }

  private nextSeq(): number {
    this.seq = this.seq >= 0xffff_ffff ? 1 : this.seq + 1;
    return this.seq;
  }

  /**
   * One attempt: nodes, token, then the node's transports in order of preference (one that
   * fails gives way to the next at once, and is tried last from then on), open, AUTH;
   * failures go to `retry`.
   */
  private async connect(): Promise<void> {
    if (this.stopped) return;
    const { control, region, uid } = this.options;
    this.attempt += 1;
    const attempt = this.attempt;
    try {
      this.setState({ phase: 'connecting', failures: this.failures });
      const list = await fetchNodes(control, { region, uid });
      let candidates = list.nodes.filter((n) => this.options.transports.some((t) => t.address(n)));
      if (candidates.length === 0) throw new Error('control lists no gateway this client can reach');
      // After a drain, prefer any other node while the drained one may still be listed.
      if (this.avoid && candidates.length > 1) candidates = candidates.filter((n) => n.node_id !== this.avoid);
      // The first node first; after failures, the next ones in turn.
      const node = candidates[this.failures % candidates.length]!;
      const offered = this.options.transports.filter((t) => t.address(node));
      // A transport that failed on this client goes last (it may work elsewhere, but a
      // browser whose WebTransport stalls should not pay for it on every reconnect).
      const ordered = [...offered.filter((t) => !this.broken.has(t.name)), ...offered.filter((t) => this.broken.has(t.name))];
      let lastError: unknown;
      for (const transport of ordered) {
        try {
          await this.session(node, transport, attempt);
          return;
        } catch (e) {
          if (e instanceof FinalError || attempt !== this.attempt || this.stopped) throw e;
          lastError = e;
          this.broken.add(transport.name);
        }
      }
      throw lastError;
    } catch (e) {
      if (attempt !== this.attempt || this.stopped) return;
      if (e instanceof FinalError) return this.fail(e.message);
      if (e instanceof ControlError && e.status === 400) return this.fail(e.message);
      const reason = e instanceof TypeError ? `cannot reach control at ${control} (${e.message})` : e instanceof Error ? e.message : String(e);
      this.retry(reason, false);
    }
  }

  /**
   * Opens `transport` to `node` and authenticates, within the transport's `fallbackMs` (or
   * `connectTimeoutMs`). Resolves once connected (or superseded).
   * @throws FinalError for an AUTH code no retry can help; Error otherwise.
   */
  private async session(node: Node, transport: Transport, attempt: number): Promise<void> {
    const { room, uid } = this.options;
    const url = transport.address(node)!;
    const timeoutMs = Math.min(transport.fallbackMs ?? this.options.connectTimeoutMs, this.options.connectTimeoutMs);
    this.setState({ phase: 'connecting', node, transport: transport.name, url, failures: this.failures });
    const token = await this.options.token({ uid, room });
    let authed: (code: number) => void = () => {};
    const authReply = new Promise<number>((resolve) => (authed = resolve));
    const connection = await transport.open(
      url,
      {
        onFrame: (frame) => {
          this.inbox = this.inbox
            .then(() => this.onFrame(frame, authed))
            .catch((e: unknown) => {
              const error = e instanceof Error ? e : new Error(String(e));
              this.emit('error', error);
              if (this.connection === connection) connection.close(4000, 'undecodable packet');
            });
        },
        onClose: (info) => {
          authed(-1);
          if (this.connection !== connection) return;
          this.teardown();
          this.connection = undefined;
          if (this.stopped) return;
          const why = info.code === 1012 ? 'gateway restarting' : info.reason || (info.code === 1006 ? 'connection lost' : `close ${info.code}`);
          // A drained or restarted gateway is not a failure of ours: reconnect soon, elsewhere.
          if (info.code === 1012) this.avoid = node.node_id;
          this.retry(`disconnected from ${node.node_id} (${why})`, info.code === 1012);
        },
      },
      timeoutMs,
      node,
    );
    if (this.stopped || attempt !== this.attempt) {
      connection.close(1000, 'superseded');
      return;
    }
    this.connection = connection;
    this.node = node;
    const auth = { uid, roomid: room, protover: this.protover, platform: 'web', type: 2, key: token, drain: true };
    connection.send(encodePacket(Op.AUTH, Version.CONTROL, this.nextSeq(), JSON.stringify(auth)));
    const code = await Promise.race([
      authReply,
      new Promise<number>((resolve) => setTimeout(() => resolve(-2), timeoutMs)),
    ]);
    if (code === 0) {
      this.failures = 0;
      this.avoid = undefined;
      this.setState({ phase: 'connected', node, transport: connection.transport, url, failures: 0 });
      const beat = () => connection.send(encodePacket(Op.HEARTBEAT, Version.CONTROL, this.nextSeq()));
      beat();
      this.heartbeat = setInterval(beat, this.options.heartbeatMs);
      return;
    }
    if (this.connection === connection) {
      this.connection = undefined;
      connection.close(1000, 'auth failed');
    }
    if (code === -2) throw new Error(`${transport.name}: no AUTH_REPLY within ${timeoutMs} ms`);
    if (code === -1) throw new Error(`${transport.name}: closed before AUTH_REPLY`);
    const message = `AUTH refused: ${code} (${authMeaning(code)})`;
    if (isFinalAuthCode(code)) throw new FinalError(message);
    throw new Error(message);
  }

  private async onFrame(frame: Uint8Array, authed: (code: number) => void): Promise<void> {
    const receivedAt = performance.now();
    for (const packet of splitPackets(frame)) {
      switch (packet.op) {
        case Op.AUTH_REPLY:
          authed(Number(jsonBody<{ code?: number }>(packet).code ?? -1));
          break;
        case Op.HEARTBEAT_REPLY:
          this.emit('online', onlineCount(packet));
          break;
        case Op.MESSAGE:
          for (const raw of await messageBodies(packet, this.decompressors)) {
            let data: unknown;
            try {
              data = JSON.parse(bodyText(raw));
            } catch {
              data = undefined;
            }
            this.emit('message', { data, raw, receivedAt });
          }
          break;
        case Op.UPSTREAM_REPLY:
          this.onUpstreamReply(packet);
          break;
        case Op.DRAIN: {
          const body = jsonBody<{ reason?: string; reconnect_after_ms?: number }>(packet);
          this.avoid = this.node?.node_id;
          this.emit('drain', { reason: body.reason ?? 'drain', reconnectAfterMs: body.reconnect_after_ms ?? 0 });
          break; // the close (1012) follows; onClose reconnects
        }
        default:
          break; // an op this client did not opt in to
      }
    }
  }

  private onUpstreamReply(packet: Packet): void {
    const pending = this.pending.get(packet.seq);
    if (!pending) return;
    this.pending.delete(packet.seq);
    clearTimeout(pending.timer);
    const body = jsonBody<Omit<UpstreamReply, 'meaning'>>(packet);
    if (typeof body.code !== 'number') throw new ProtocolError('UPSTREAM_REPLY without a code');
    pending.resolve({ ...body, meaning: upstreamMeaning(body.code) });
  }

  private teardown(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    for (const [seq, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.resolve({ code: -1, meaning: 'connection lost before the reply' });
      this.pending.delete(seq);
    }
  }

  /**
   * Waits (exponential backoff, the upper half random) and tries again. `drained`: the gateway
   * went away in order (DRAIN, close 1012), which is no failure of this client: the shortest
   * delay, and the next attempt starts from the top of the list (without the drained node).
   */
  private retry(reason: string, drained: boolean): void {
    if (this.stopped) return;
    if (!drained) this.failures += 1;
    const soon = drained;
    const { backoffMinMs, backoffMaxMs } = this.options;
    const ceiling = soon ? backoffMinMs : Math.min(backoffMaxMs, backoffMinMs * 2 ** Math.min(this.failures - 1, 16));
    // Half fixed, half random: spread many viewers of one dead gateway over time.
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.setState({ phase: 'waiting', error: reason, retryInMs: delay, failures: this.failures, node: this.node });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  private fail(reason: string): void {
    this.stopped = true;
    this.setState({ phase: 'failed', error: reason, failures: this.failures });
  }
}
