/**
 * Transports carry whole frames (one or more packets) both ways. The client only sees this
 * interface: WebSocket (`ws`/`wss`) and WebTransport over HTTP/3 are one class each, tried in
 * the order of `DanmuClientOptions.transports`.
 */

import { PacketReader } from './codec.js';
import type { Node } from './control.js';

/** Why a transport closed: a WebSocket close code (1006 when the connection was lost) and reason. */
export interface CloseInfo {
  code: number;
  reason: string;
}

/** An open connection to one gateway. */
export interface Connection {
  /** The transport's name as shown to users, e.g. `ws`. */
  readonly transport: string;
  /** Where it is connected, e.g. `ws://127.0.0.1:7000/sub`. */
  readonly url: string;
  /** Sends one frame. Ignored once closed. */
  send(frame: Uint8Array): void;
  /** Closes with a code and reason (WebSocket codes). */
  close(code?: number, reason?: string): void;
}

/** Callbacks a transport calls; `onFrame` in arrival order. */
export interface ConnectionHandlers {
  onFrame(frame: Uint8Array): void;
  onClose(info: CloseInfo): void;
}

/** Opens connections of one kind. */
export interface Transport {
  readonly name: string;
  /**
   * How long an attempt on this transport (open + AUTH_REPLY) may take before the client falls
   * back to the next transport, in ms; undefined: the client's `connectTimeoutMs`.
   */
  readonly fallbackMs?: number;
  /** The address to dial on `node`, or undefined when the node does not offer this transport. */
  address(node: Node): string | undefined;
  /**
   * Opens a connection to `address` on `node`; resolves once it can send, rejects when it
   * cannot be opened (within `timeoutMs`).
   */
  open(address: string, handlers: ConnectionHandlers, timeoutMs: number, node?: Node): Promise<Connection>;
}

/** Whether the page was loaded over HTTPS (then only `wss` and WebTransport can be dialled). */
export function pageIsSecure(): boolean {
  return globalThis.location?.protocol === 'https:';
}

/**
 * WebSocket (binary messages), the browser's own `WebSocket`: `wss://host:port/sub` on a page
 * served over HTTPS (a browser refuses `ws` there), else `ws://` (or `wss://` when the node
 * offers no `ws`).
 */
export class WebSocketTransport implements Transport {
  readonly name: string = 'ws';
  private readonly secure: boolean;

  /** `secure`: dial `wss` only; default: whether the page is served over HTTPS. */
  constructor(options: { secure?: boolean } = {}) {
    this.secure = options.secure ?? pageIsSecure();
  }

  address(node: Node): string | undefined {
    if (node.ws && !this.secure) return `ws://${node.ws}/sub`;
    return node.wss ? `wss://${node.wss}/sub` : undefined;
  }

  open(url: string, handlers: ConnectionHandlers, timeoutMs: number): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url);
      socket.binaryType = 'arraybuffer';
      let opened = false;
      const timer = setTimeout(() => {
        if (!opened) {
          socket.close();
          reject(new Error(`${url}: not open within ${timeoutMs} ms`));
        }
      }, timeoutMs);
      socket.onopen = () => {
        opened = true;
        clearTimeout(timer);
        resolve({
          transport: url.startsWith('wss:') ? 'wss' : 'ws',
          url,
          send: (frame) => {
            if (socket.readyState === WebSocket.OPEN) socket.send(frame);
          },
          close: (code = 1000, reason = '') => socket.close(code, reason),
        });
      };
      socket.onmessage = (event) => {
        if (event.data instanceof ArrayBuffer) handlers.onFrame(new Uint8Array(event.data));
      };
      socket.onclose = (event) => {
        clearTimeout(timer);
        if (!opened) {
          reject(new Error(`${url}: connection refused or lost (close ${event.code})`));
          return;
        }
        handlers.onClose({ code: event.code, reason: event.reason });
      };
    });
  }
}

/** Hex (as control gives `cert_sha256`) to bytes; undefined when it is not 64 hex digits. */
export function hexBytes(hex: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return undefined;
  return new Uint8Array(hex.match(/../g)!.map((b) => parseInt(b, 16)));
}

/**
 * WebTransport over HTTP/3 (`https://host:port/sub`, the gateway's QUIC port): one
 * bidirectional stream carrying the TCP framing (packets back to back), reassembled here into
 * whole packets. Offered only where the browser has `WebTransport` and the node lists
 * `webtransport`. With `cert_sha256` in the node list, the certificate is checked against that
 * hash (`serverCertificateHashes`, for a self-signed certificate valid at most 14 days) instead
 * of the Web PKI.
 *
 * An attempt is bounded by `fallbackMs` (default 3 000): Safari's and Firefox's WebTransport
 * have known flow-control problems, so a stalled attempt gives way to the next transport fast.
 */
export class WebTransportTransport implements Transport {
  readonly name = 'webtransport';
  readonly fallbackMs: number;
  private readonly certificateHashes: boolean;

  /**
   * `fallbackMs`: bound of one attempt (open + AUTH_REPLY); `certificateHashes`: pass the node
   * list's `cert_sha256` (default true; false for a gateway with a Web PKI certificate).
   */
  constructor(options: { fallbackMs?: number; certificateHashes?: boolean } = {}) {
    this.fallbackMs = options.fallbackMs ?? 3_000;
    this.certificateHashes = options.certificateHashes ?? true;
  }

  address(node: Node): string | undefined {
    if (typeof WebTransport !== 'function' || !node.webtransport) return undefined;
    return `https://${node.webtransport}/sub`;
  }

  async open(url: string, handlers: ConnectionHandlers, timeoutMs: number, node?: Node): Promise<Connection> {
    const hash = this.certificateHashes && node?.cert_sha256 ? hexBytes(node.cert_sha256) : undefined;
    const options: WebTransportOptions = hash ? { serverCertificateHashes: [{ algorithm: 'sha-256', value: hash as BufferSource }] } : {};
    const session = new WebTransport(url, options);
    // Rejections after the attempt is over are reported through onClose, not unhandled.
    session.closed.catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${url}: not open within ${timeoutMs} ms`)), timeoutMs);
    });
    let stream: WebTransportBidirectionalStream;
    try {
      stream = await Promise.race([session.ready.then(() => session.createBidirectionalStream()), deadline]);
    } catch (e) {
      session.close();
      throw new Error(`${url}: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      clearTimeout(timer);
    }
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    let closed = false;
    const finish = (info: CloseInfo) => {
      if (closed) return;
      closed = true;
      handlers.onClose(info);
    };
    void (async () => {
      const packets = new PacketReader();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const frame = packets.push(value as Uint8Array);
          if (frame) handlers.onFrame(frame);
        }
        finish({ code: 1000, reason: 'the gateway ended the stream' });
      } catch (e) {
        finish({ code: 1006, reason: e instanceof Error ? e.message : String(e) });
      }
      session.close();
    })();
    return {
      transport: this.name,
      url,
      send: (frame) => {
        if (!closed) writer.write(frame).catch(() => {});
      },
      close: (code = 1000, reason = '') => {
        session.close({ closeCode: code, reason });
        finish({ code, reason });
      },
    };
  }
}
