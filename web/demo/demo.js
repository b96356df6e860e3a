// client/src/codec.ts
var HEADER_LEN = 16;
var Op = {
  HEARTBEAT: 2,
  HEARTBEAT_REPLY: 3,
  MESSAGE: 5,
  AUTH: 7,
  AUTH_REPLY: 8,
  DRAIN: 1001,
  ROOM_CHANGE: 1002,
  ROOM_CHANGE_REPLY: 1003,
  UPSTREAM: 1004,
  UPSTREAM_REPLY: 1005,
  ACK: 1006
};
var Version = { RAW: 0, CONTROL: 1, ZLIB: 2, BROTLI: 3 };
var ProtocolError = class extends Error {
  name = "ProtocolError";
};
var utf8 = new TextEncoder();
var text = new TextDecoder();
function encodePacket(op, version, seq, body) {
  const bytes = typeof body === "string" ? utf8.encode(body) : body ?? new Uint8Array(0);
  const out = new Uint8Array(HEADER_LEN + bytes.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, out.length);
  view.setUint16(4, HEADER_LEN);
  view.setUint16(6, version);
  view.setUint32(8, op);
  view.setUint32(12, seq);
  out.set(bytes, HEADER_LEN);
  return out;
}
function splitPackets(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const packets = [];
  let at = 0;
  while (at < bytes.length) {
    if (bytes.length - at < HEADER_LEN) throw new ProtocolError(`truncated header at byte ${at}`);
    const len = view.getUint32(at);
    const headerLen = view.getUint16(at + 4);
    if (headerLen !== HEADER_LEN || len < HEADER_LEN || at + len > bytes.length) {
      throw new ProtocolError(`bad packet at byte ${at}: length ${len}, header ${headerLen}, ${bytes.length - at} bytes left`);
    }
    packets.push({
      version: view.getUint16(at + 6),
      op: view.getUint32(at + 8),
      seq: view.getUint32(at + 12),
      body: bytes.subarray(at + HEADER_LEN, at + len)
    });
    at += len;
  }
  return packets;
}
var MAX_PACKET_BYTES = 16 * 1024 * 1024;
var PacketReader = class {
  buffered = new Uint8Array(0);
  /** @throws ProtocolError on a header length other than 16 or a length out of range. */
  push(chunk) {
    const bytes = this.buffered.length === 0 ? chunk : concat(this.buffered, chunk);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let at = 0;
    while (bytes.length - at >= 6) {
      const len = view.getUint32(at);
      const headerLen = view.getUint16(at + 4);
      if (headerLen !== HEADER_LEN || len < HEADER_LEN || len > MAX_PACKET_BYTES) {
        throw new ProtocolError(`bad packet at byte ${at}: length ${len}, header ${headerLen}`);
      }
      if (bytes.length - at < len) break;
      at += len;
    }
    this.buffered = bytes.slice(at);
    return at === 0 ? void 0 : bytes.subarray(0, at);
  }
};
function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
function nativeZlib() {
  if (typeof DecompressionStream !== "function") return void 0;
  return async (body) => {
    const stream = new Blob([body]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  };
}
function nativeBrotli() {
  if (typeof DecompressionStream !== "function") return void 0;
  try {
    new DecompressionStream("brotli");
  } catch {
    return void 0;
  }
  return async (body) => {
    const stream = new Blob([body]).stream().pipeThrough(new DecompressionStream("brotli"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  };
}
function chooseProtover(decompressors) {
  if (decompressors.brotli) return 3;
  if (decompressors.zlib) return 2;
  return 0;
}
async function messageBodies(packet, decompressors) {
  switch (packet.version) {
    case Version.RAW:
    case Version.CONTROL:
      return [packet.body];
    case Version.ZLIB:
    case Version.BROTLI: {
      const decode = packet.version === Version.ZLIB ? decompressors.zlib : decompressors.brotli;
      if (!decode) throw new ProtocolError(`no decoder for a version ${packet.version} batch`);
      let run;
      try {
        run = await decode(packet.body);
      } catch (e) {
        throw new ProtocolError(`version ${packet.version} batch does not decompress: ${String(e)}`);
      }
      return splitPackets(run).map((inner) => {
        if (inner.version !== Version.RAW || inner.op !== Op.MESSAGE) {
          throw new ProtocolError(`inner packet of a batch is version ${inner.version} op ${inner.op}, not 0/5`);
        }
        return inner.body;
      });
    }
    default:
      throw new ProtocolError(`MESSAGE with unknown version ${packet.version}`);
  }
}
function onlineCount(packet) {
  if (packet.body.length !== 4) throw new ProtocolError(`HEARTBEAT_REPLY body is ${packet.body.length} bytes, not 4`);
  return new DataView(packet.body.buffer, packet.body.byteOffset, 4).getUint32(0);
}
function jsonBody(packet) {
  try {
    return JSON.parse(text.decode(packet.body));
  } catch {
    throw new ProtocolError(`op ${packet.op} body is not JSON`);
  }
}
function bodyText(body) {
  return text.decode(body);
}

// client/src/codes.ts
var AUTH = {
  0: "authenticated",
  [-101]: "token invalid",
  [-102]: "token expired",
  [-103]: "room not allowed by the token",
  [-104]: "bad AUTH request",
  [-105]: "uid does not match the token",
  [-106]: "unsupported protover"
};
var UPSTREAM = {
  0: "sent",
  1: "sent, with blocked words masked",
  [-201]: "rate limited",
  [-202]: "this user may not send danmu",
  [-203]: "this address may not send danmu",
  [-204]: "contains a blocked word",
  [-205]: "bad request",
  [-206]: "too long",
  [-207]: "sending is off on this gateway",
  [-208]: "gateway busy, try again"
};
function authMeaning(code) {
  return AUTH[code] ?? "unknown code";
}
function isFinalAuthCode(code) {
  return code === -103 || code === -104 || code === -105 || code === -106;
}
function upstreamMeaning(code) {
  return UPSTREAM[code] ?? "unknown code";
}

// client/src/control.ts
var ControlError = class extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
  status;
  name = "ControlError";
};
async function fetchNodes(control, query) {
  const params = new URLSearchParams();
  if (query.region) params.set("region", query.region);
  if (query.uid !== void 0) params.set("uid", String(query.uid));
  const response = await fetch(`${control.replace(/\/+$/, "")}/v1/nodes?${params}`, { cache: "no-store" });
  const body = await response.text();
  if (!response.ok) throw new ControlError(`GET /v1/nodes: HTTP ${response.status}: ${errorText(body)}`, response.status);
  return JSON.parse(body);
}
async function demoToken(control, uid, rooms) {
  const response = await fetch(`${control.replace(/\/+$/, "")}/v1/tokens`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ uid, rooms })
  });
  const body = await response.text();
  if (!response.ok) throw new ControlError(`POST /v1/tokens: HTTP ${response.status}: ${errorText(body)}`, response.status);
  return JSON.parse(body).token;
}
function errorText(body) {
  try {
    return JSON.parse(body).error ?? body;
  } catch {
    return body;
  }
}

// client/src/transport.ts
function pageIsSecure() {
  return globalThis.location?.protocol === "https:";
}
var WebSocketTransport = class {
  name = "ws";
  secure;
  /** `secure`: dial `wss` only; default: whether the page is served over HTTPS. */
  constructor(options = {}) {
    this.secure = options.secure ?? pageIsSecure();
  }
  address(node) {
    if (node.ws && !this.secure) return `ws://${node.ws}/sub`;
    return node.wss ? `wss://${node.wss}/sub` : void 0;
  }
  open(url, handlers, timeoutMs) {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url);
      socket.binaryType = "arraybuffer";
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
          transport: url.startsWith("wss:") ? "wss" : "ws",
          url,
          send: (frame) => {
            if (socket.readyState === WebSocket.OPEN) socket.send(frame);
          },
          close: (code = 1e3, reason = "") => socket.close(code, reason)
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
};
function hexBytes(hex) {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return void 0;
  return new Uint8Array(hex.match(/../g).map((b) => parseInt(b, 16)));
}
var WebTransportTransport = class {
  name = "webtransport";
  fallbackMs;
  certificateHashes;
  /**
   * `fallbackMs`: bound of one attempt (open + AUTH_REPLY); `certificateHashes`: pass the node
   * list's `cert_sha256` (default true; false for a gateway with a Web PKI certificate).
   */
  constructor(options = {}) {
    this.fallbackMs = options.fallbackMs ?? 3e3;
    this.certificateHashes = options.certificateHashes ?? true;
  }
  address(node) {
    if (typeof WebTransport !== "function" || !node.webtransport) return void 0;
    return `https://${node.webtransport}/sub`;
  }
  async open(url, handlers, timeoutMs, node) {
    const hash = this.certificateHashes && node?.cert_sha256 ? hexBytes(node.cert_sha256) : void 0;
    const options = hash ? { serverCertificateHashes: [{ algorithm: "sha-256", value: hash }] } : {};
    const session = new WebTransport(url, options);
    session.closed.catch(() => {
    });
    let timer;
    const deadline = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${url}: not open within ${timeoutMs} ms`)), timeoutMs);
    });
    let stream;
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
    const finish = (info) => {
      if (closed) return;
      closed = true;
      handlers.onClose(info);
    };
    void (async () => {
      const packets = new PacketReader();
      try {
        for (; ; ) {
          const { value, done } = await reader.read();
          if (done) break;
          const frame = packets.push(value);
          if (frame) handlers.onFrame(frame);
        }
        finish({ code: 1e3, reason: "the gateway ended the stream" });
      } catch (e) {
        finish({ code: 1006, reason: e instanceof Error ? e.message : String(e) });
      }
      session.close();
    })();
    return {
      transport: this.name,
      url,
      send: (frame) => {
        if (!closed) writer.write(frame).catch(() => {
        });
      },
      close: (code = 1e3, reason = "") => {
        session.close({ closeCode: code, reason });
        finish({ code, reason });
      }
    };
  }
};

// client/src/client.ts
var FinalError = class extends Error {
  name = "FinalError";
};
var NotConnectedError = class extends Error {
  name = "NotConnectedError";
};
var DanmuClient = class {
  protover;
  options;
  decompressors;
  listeners = /* @__PURE__ */ new Map();
  connection;
  node;
  phase = "closed";
  failures = 0;
  attempt = 0;
  avoid;
  /** Transports that failed on this client: tried after the others from then on. */
  broken = /* @__PURE__ */ new Set();
  seq = 1;
  heartbeat;
  retryTimer;
  inbox = Promise.resolve();
  pending = /* @__PURE__ */ new Map();
  stopped = true;
  constructor(options) {
    if (!Number.isSafeInteger(options.room) || options.room <= 0) {
      throw new RangeError(`room must be a positive integer, not ${String(options.room)}`);
    }
    if (!Number.isSafeInteger(options.uid) || options.uid <= 0) {
      throw new RangeError(`uid must be a positive integer, not ${String(options.uid)}`);
    }
    this.options = {
      transports: [new WebTransportTransport(), new WebSocketTransport()],
      heartbeatMs: 3e4,
      backoffMinMs: 500,
      backoffMaxMs: 15e3,
      connectTimeoutMs: 5e3,
      replyTimeoutMs: 5e3,
      ...options
    };
    this.decompressors = options.decompressors ?? { zlib: nativeZlib(), brotli: nativeBrotli() };
    this.protover = chooseProtover(this.decompressors);
  }
  /** Subscribes to an event; returns the function that unsubscribes. */
  on(type, listener) {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, set = /* @__PURE__ */ new Set());
    set.add(listener);
    return () => set.delete(listener);
  }
  /** Starts connecting (and reconnecting until `close`). */
  start() {
    if (!this.stopped) return;
    this.stopped = false;
    void this.connect();
  }
  /** Closes the connection and stops reconnecting. */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.teardown();
    this.connection?.close(1e3, "closed by the page");
    this.connection = void 0;
    this.setState({ phase: "closed", failures: this.failures });
  }
  /**
   * Sends a danmu (UPSTREAM, op 1004) and resolves with the gateway's UPSTREAM_REPLY. What
   * passes moderation reaches the room like any other message (when the gateway echoes it).
   * @throws NotConnectedError when not connected; rejects on no reply within `replyTimeoutMs`.
   */
  send(text2, style = {}) {
    const connection = this.connection;
    if (!connection || this.phase !== "connected") return Promise.reject(new NotConnectedError("not connected"));
    const seq = this.nextSeq();
    const body = JSON.stringify({ msg: text2, color: style.color ?? 16777215, mode: style.mode ?? 1 });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new Error(`no UPSTREAM_REPLY within ${this.options.replyTimeoutMs} ms`));
      }, this.options.replyTimeoutMs);
      this.pending.set(seq, { resolve, timer });
      connection.send(encodePacket(Op.UPSTREAM, Version.CONTROL, seq, body));
    });
  }
  emit(type, value) {
    for (const listener of this.listeners.get(type) ?? []) listener(value);
  }
  setState(state) {
    this.phase = state.phase;
    this.emit("state", state);
  }
  nextSeq() {
    this.seq = this.seq >= 4294967295 ? 1 : this.seq + 1;
    return this.seq;
  }
  /**
   * One attempt: nodes, token, then the node's transports in order of preference (one that
   * fails gives way to the next at once, and is tried last from then on), open, AUTH;
   * failures go to `retry`.
   */
  async connect() {
    if (this.stopped) return;
    const { control, region, uid } = this.options;
    this.attempt += 1;
    const attempt = this.attempt;
    try {
      this.setState({ phase: "connecting", failures: this.failures });
      const list = await fetchNodes(control, { region, uid });
      let candidates = list.nodes.filter((n) => this.options.transports.some((t) => t.address(n)));
      if (candidates.length === 0) throw new Error("control lists no gateway this client can reach");
      if (this.avoid && candidates.length > 1) candidates = candidates.filter((n) => n.node_id !== this.avoid);
      const node = candidates[this.failures % candidates.length];
      const offered = this.options.transports.filter((t) => t.address(node));
      const ordered = [...offered.filter((t) => !this.broken.has(t.name)), ...offered.filter((t) => this.broken.has(t.name))];
      let lastError;
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
  async session(node, transport, attempt) {
    const { room, uid } = this.options;
    const url = transport.address(node);
    const timeoutMs = Math.min(transport.fallbackMs ?? this.options.connectTimeoutMs, this.options.connectTimeoutMs);
    this.setState({ phase: "connecting", node, transport: transport.name, url, failures: this.failures });
    const token = await this.options.token({ uid, room });
    let authed = () => {
    };
    const authReply = new Promise((resolve) => authed = resolve);
    const connection = await transport.open(
      url,
      {
        onFrame: (frame) => {
          this.inbox = this.inbox.then(() => this.onFrame(frame, authed)).catch((e) => {
            const error = e instanceof Error ? e : new Error(String(e));
            this.emit("error", error);
            if (this.connection === connection) connection.close(4e3, "undecodable packet");
          });
        },
        onClose: (info) => {
          authed(-1);
          if (this.connection !== connection) return;
          this.teardown();
          this.connection = void 0;
          if (this.stopped) return;
          const why = info.code === 1012 ? "gateway restarting" : info.reason || (info.code === 1006 ? "connection lost" : `close ${info.code}`);
          if (info.code === 1012) this.avoid = node.node_id;
          this.retry(`disconnected from ${node.node_id} (${why})`, info.code === 1012);
        }
      },
      timeoutMs,
      node
    );
    if (this.stopped || attempt !== this.attempt) {
      connection.close(1e3, "superseded");
      return;
    }
    this.connection = connection;
    this.node = node;
    const auth = { uid, roomid: room, protover: this.protover, platform: "web", type: 2, key: token, drain: true };
    connection.send(encodePacket(Op.AUTH, Version.CONTROL, this.nextSeq(), JSON.stringify(auth)));
    const code = await Promise.race([
      authReply,
      new Promise((resolve) => setTimeout(() => resolve(-2), timeoutMs))
    ]);
    if (code === 0) {
      this.failures = 0;
      this.avoid = void 0;
      this.setState({ phase: "connected", node, transport: connection.transport, url, failures: 0 });
      const beat = () => connection.send(encodePacket(Op.HEARTBEAT, Version.CONTROL, this.nextSeq()));
      beat();
      this.heartbeat = setInterval(beat, this.options.heartbeatMs);
      return;
    }
    if (this.connection === connection) {
      this.connection = void 0;
      connection.close(1e3, "auth failed");
    }
    if (code === -2) throw new Error(`${transport.name}: no AUTH_REPLY within ${timeoutMs} ms`);
    if (code === -1) throw new Error(`${transport.name}: closed before AUTH_REPLY`);
    const message = `AUTH refused: ${code} (${authMeaning(code)})`;
    if (isFinalAuthCode(code)) throw new FinalError(message);
    throw new Error(message);
  }
  async onFrame(frame, authed) {
    const receivedAt = performance.now();
    for (const packet of splitPackets(frame)) {
      switch (packet.op) {
        case Op.AUTH_REPLY:
          authed(Number(jsonBody(packet).code ?? -1));
          break;
        case Op.HEARTBEAT_REPLY:
          this.emit("online", onlineCount(packet));
          break;
        case Op.MESSAGE:
          for (const raw of await messageBodies(packet, this.decompressors)) {
            let data;
            try {
              data = JSON.parse(bodyText(raw));
            } catch {
              data = void 0;
            }
            this.emit("message", { data, raw, receivedAt });
          }
          break;
        case Op.UPSTREAM_REPLY:
          this.onUpstreamReply(packet);
          break;
        case Op.DRAIN: {
          const body = jsonBody(packet);
          this.avoid = this.node?.node_id;
          this.emit("drain", { reason: body.reason ?? "drain", reconnectAfterMs: body.reconnect_after_ms ?? 0 });
          break;
        }
        default:
          break;
      }
    }
  }
  onUpstreamReply(packet) {
    const pending = this.pending.get(packet.seq);
    if (!pending) return;
    this.pending.delete(packet.seq);
    clearTimeout(pending.timer);
    const body = jsonBody(packet);
    if (typeof body.code !== "number") throw new ProtocolError("UPSTREAM_REPLY without a code");
    pending.resolve({ ...body, meaning: upstreamMeaning(body.code) });
  }
  teardown() {
    clearInterval(this.heartbeat);
    this.heartbeat = void 0;
    for (const [seq, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.resolve({ code: -1, meaning: "connection lost before the reply" });
      this.pending.delete(seq);
    }
  }
  /**
   * Waits (exponential backoff, the upper half random) and tries again. `drained`: the gateway
   * went away in order (DRAIN, close 1012), which is no failure of this client: the shortest
   * delay, and the next attempt starts from the top of the list (without the drained node).
   */
  retry(reason, drained) {
    if (this.stopped) return;
    if (!drained) this.failures += 1;
    const soon = drained;
    const { backoffMinMs, backoffMaxMs } = this.options;
    const ceiling = soon ? backoffMinMs : Math.min(backoffMaxMs, backoffMinMs * 2 ** Math.min(this.failures - 1, 16));
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.setState({ phase: "waiting", error: reason, retryInMs: delay, failures: this.failures, node: this.node });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }
  fail(reason) {
    this.stopped = true;
    this.setState({ phase: "failed", error: reason, failures: this.failures });
  }
};

// demo/src/stage.ts
var CROSS_SECONDS = 8;
var GAP_PX = 32;
var MAX_WAIT_MS = 3e3;
var MAX_ON_STAGE = 300;
var Stage = class {
  // per lane: performance.now() when it takes a new comment
  constructor(root) {
    this.root = root;
  }
  root;
  lanes = [];
  laneHeight() {
    return parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--lane")) || 34;
  }
  /** Flies `text`; returns false when every lane is busy for too long (the comment is dropped). */
  fly(text2, color, mine) {
    const lane = this.laneHeight();
    const count = Math.max(1, Math.floor((this.root.clientHeight - 8) / lane));
    if (this.lanes.length !== count) this.lanes = Array.from({ length: count }, (_, i) => this.lanes[i] ?? 0);
    if (this.root.querySelectorAll(".bullet").length >= MAX_ON_STAGE) return false;
    const now = performance.now();
    let best = this.lanes.findIndex((free) => free <= now);
    if (best < 0) best = this.lanes.indexOf(Math.min(...this.lanes));
    const wait = Math.max(0, this.lanes[best] - now);
    if (wait > MAX_WAIT_MS) return false;
    const el = document.createElement("div");
    el.className = mine ? "bullet mine" : "bullet";
    el.textContent = text2;
    if (color) el.style.color = color;
    el.style.top = `${4 + best * lane}px`;
    el.style.transform = `translateX(${this.root.clientWidth}px)`;
    this.root.appendChild(el);
    const width = el.offsetWidth;
    const stageWidth = this.root.clientWidth;
    const speed = stageWidth / CROSS_SECONDS;
    const distance = stageWidth + width;
    this.lanes[best] = now + wait + (width + GAP_PX) / speed * 1e3;
    const animation = el.animate(
      [{ transform: `translateX(${stageWidth}px)` }, { transform: `translateX(${-width}px)` }],
      { duration: distance / speed * 1e3, delay: wait, easing: "linear", fill: "both" }
    );
    animation.onfinish = () => el.remove();
    animation.oncancel = () => el.remove();
    return true;
  }
};

// demo/src/cards.ts
function str(v) {
  return typeof v === "string" && v ? v : typeof v === "number" ? String(v) : void 0;
}
function card(kind, icon, title, detail) {
  const li = document.createElement("li");
  li.className = `card ${kind}`;
  const i = document.createElement("div");
  i.className = "icon";
  i.textContent = icon;
  const t = document.createElement("div");
  t.className = "title";
  t.append(...title);
  const d = document.createElement("div");
  d.className = "detail";
  d.textContent = detail;
  li.append(i, t, d);
  return li;
}
function em(text2) {
  const e = document.createElement("em");
  e.textContent = text2;
  return e;
}
var time = () => (/* @__PURE__ */ new Date()).toLocaleTimeString();
function cardFor(message) {
  const cmd = str(message["cmd"]) ?? "";
  const data = typeof message["data"] === "object" && message["data"] !== null ? message["data"] : {};
  if (cmd === "SEND_GIFT") {
    const who = str(data["uname"]) ?? `uid ${str(data["uid"]) ?? "?"}`;
    const gift = str(data["giftName"]) ?? "a gift";
    const num = str(data["num"]) ?? "1";
    const price = typeof data["price"] === "number" ? ` \xB7 ${data["price"]} each` : "";
    return card("gift", "\u{1F381}", [`${who} ${str(data["action"]) ?? "sent"} `, em(`${gift} \xD7${num}`)], `${time()}${price}`);
  }
  if (cmd === "SUPER_CHAT_MESSAGE") {
    const who = str(data["user_info"]?.["uname"]) ?? str(data["uname"]) ?? "someone";
    return card("gift", "\u{1F4AC}", [`${who}: `, em(str(data["message"]) ?? "")], `${time()} \xB7 super chat \xA5${str(data["price"]) ?? "?"}`);
  }
  const text2 = str(message["msg"]) ?? str(message["text"]) ?? str(data["msg"]) ?? str(data["text"]) ?? str(message["msg_common"]);
  if (!text2) return void 0;
  const title = str(message["title"]) ?? str(data["title"]);
  return card("notice", "\u{1F4E2}", [title ? `${title}: ${text2}` : text2], `${time()} \xB7 ${cmd || "notice"}`);
}

// demo/src/demo.ts
var $ = (id) => document.getElementById(id);
function positiveInt(name, raw, fallback) {
  if (raw === null || raw === "") return fallback();
  if (!/^[0-9]+$/.test(raw) || !Number.isSafeInteger(Number(raw)) || Number(raw) <= 0) {
    throw new Error(`?${name}=${raw} is not valid: ${name} must be a positive whole number, e.g. ?${name}=1001`);
  }
  return Number(raw);
}
function readParams() {
  const query = new URLSearchParams(location.search);
  const origin = location.protocol.startsWith("http") ? location.origin : "http://127.0.0.1:8080";
  const region = query.get("region") ?? void 0;
  if (region !== void 0 && !/^[A-Za-z0-9_-]{1,32}$/.test(region)) {
    throw new Error(`?region=${region} is not valid: a region is a name such as A or B`);
  }
  return {
    control: (query.get("control") ?? origin).replace(/\/+$/, ""),
    room: positiveInt("room", query.get("room"), () => 1001),
    region: region || void 0,
    uid: positiveInt("uid", query.get("uid"), () => 1 + Math.floor(Math.random() * 2e9))
  };
}
function showError(message) {
  const banner = $("banner");
  banner.textContent = message;
  banner.classList.add("show");
}
function sentAt(data) {
  const info = data["info"];
  if (Array.isArray(info) && Array.isArray(info[0]) && typeof info[0][4] === "number") return info[0][4];
  if (typeof data["ts_ms"] === "number") return data["ts_ms"];
  return void 0;
}
function colorOf(n) {
  return typeof n === "number" ? "#" + (n & 16777215).toString(16).padStart(6, "0") : void 0;
}
async function main() {
  let params;
  try {
    params = readParams();
  } catch (e) {
    showError(e.message);
    setState("failed", "bad page parameters");
    return;
  }
  $("stage-label").textContent = `ROOM ${params.room}`;
  document.title = `danmu \xB7 room ${params.room}`;
  if (params.region) {
    try {
      const list = await fetchNodes(params.control, { region: params.region });
      const regions = [...new Set(list.nodes.map((n) => n.region))];
      if (!regions.includes(params.region)) {
        showError(
          `No gateway in region "${params.region}". ` + (regions.length ? `Regions with gateways: ${regions.join(", ")} (e.g. ?region=${regions[0]}).` : "Control lists no gateway at all yet.")
        );
        setState("failed", `region ${params.region} unknown`);
        return;
      }
    } catch (e) {
      showError(`Control at ${params.control}: ${e.message}`);
      setState("failed", "control refused the region");
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
    heartbeatMs: 1e3
  });
  const stage = new Stage($("stage"));
  const arrivals = [];
  const latencies = [];
  const mine = /* @__PURE__ */ new Set();
  client.on("state", (s) => renderState(s, client.protover));
  client.on("online", (count) => $("online").textContent = String(count));
  client.on("error", (e) => console.warn("danmu:", e.message));
  client.on("drain", (d) => console.info("danmu: gateway draining:", d.reason));
  client.on("message", ({ data }) => {
    arrivals.push(performance.now());
    if (typeof data !== "object" || data === null) return;
    const message = data;
    const at = sentAt(message);
    if (at !== void 0) {
      latencies.push(Date.now() - at);
      if (latencies.length > 20) latencies.shift();
    }
    if (message["cmd"] === "DANMU_MSG") {
      const info = Array.isArray(message["info"]) ? message["info"] : [];
      const meta = Array.isArray(info[0]) ? info[0] : [];
      const text2 = typeof info[1] === "string" ? info[1] : typeof message["msg"] === "string" ? message["msg"] : "";
      if (!text2) return;
      const sender = Array.isArray(info[2]) ? info[2][0] : void 0;
      const ours = sender === params.uid && mine.delete(text2);
      stage.fly(text2, colorOf(meta[3] ?? message["color"]), ours);
      return;
    }
    const card2 = cardFor(message);
    if (card2) {
      const list = $("cards");
      list.prepend(card2);
      while (list.children.length > 50) list.lastElementChild?.remove();
    }
  });
  setInterval(() => {
    const now = performance.now();
    while (arrivals.length && now - arrivals[0] > 5e3) arrivals.shift();
    $("rate").textContent = (arrivals.length / 5).toFixed(1);
    if (latencies.length) {
      const sorted = [...latencies].sort((a, b) => a - b);
      $("latency").textContent = `${Math.max(0, sorted[Math.floor(sorted.length / 2)])} ms`;
    }
  }, 500);
  const input = $("text");
  const send = async () => {
    const text2 = input.value.trim();
    if (!text2) return;
    input.value = "";
    const reply = $("reply");
    reply.className = "";
    reply.textContent = `Sending \u201C${text2}\u201D\u2026`;
    try {
      mine.add(text2);
      const r = await client.send(text2);
      let detail = "";
      if (r.code === 1 && r.msg) detail = `, shown as \u201C${r.msg}\u201D`;
      if (r.retry_after_ms !== void 0) detail = `; try again in ${(r.retry_after_ms / 1e3).toFixed(1)} s`;
      if (r.max_chars !== void 0) detail = `; at most ${r.max_chars} characters`;
      reply.className = r.code >= 0 ? "ok" : "err";
      reply.textContent = `\u201C${text2}\u201D: ${r.meaning}${detail} (code ${r.code})`;
      if (r.code === 1 && r.msg) mine.add(r.msg);
    } catch (e) {
      reply.className = "err";
      reply.textContent = `\u201C${text2}\u201D not sent: ${e.message}`;
    }
  };
  $("send").addEventListener("click", () => void send());
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") void send();
  });
  client.start();
}
function setState(phase, detail) {
  $("dot").className = `dot ${phase}`;
  $("state").textContent = detail ? `${phase}: ${detail}` : phase;
}
function renderState(s, protover) {
  $("send").disabled = s.phase !== "connected";
  switch (s.phase) {
    case "connected":
      setState("connected", `${s.node?.node_id} \xB7 region ${s.node?.region} \xB7 ${s.transport} \xB7 protover ${protover}`);
      $("banner").classList.remove("show");
      break;
    case "connecting":
      setState("connecting", s.url ? `${s.url}` : "asking control for nodes");
      break;
    case "waiting":
      setState("waiting", `${s.error}; retrying in ${((s.retryInMs ?? 0) / 1e3).toFixed(1)} s`);
      break;
    case "failed":
      setState("failed", s.error ?? "");
      showError(s.error ?? "cannot connect");
      break;
    case "closed":
      setState("closed", "");
      break;
  }
}
void main();
