/**
 * Transports carry whole frames (one or more packets) both ways. The client only sees this
 * interface, so a second transport (WebTransport, when the gateway offers it) is one more class
 * and one more entry in `DanmuClientOptions.transports`: nothing else changes.
 */

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
  /** The address to dial on `node`, or undefined when the node does not offer this transport. */
  address(node: Node): string | undefined;
  /**
   * Opens a connection; resolves once it can send, rejects when it cannot be opened (within
   * `timeoutMs`).
   */
  open(address: string, handlers: ConnectionHandlers, timeoutMs: number): Promise<Connection>;
}

/** WebSocket (`ws://host:port/sub`, binary messages), the browser's own `WebSocket`. */
export class WebSocketTransport implements Transport {
  readonly name = 'ws';

  address(node: Node): string | undefined {
    return node.ws ? `ws://${node.ws}/sub` : undefined;
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
          transport: this.name,
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
