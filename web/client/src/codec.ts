/**
 * The GOIM / Bilibili live framing as plain functions over bytes: no sockets, no timers, so the
 * test suite runs them on recorded frames (`../test/`). The wire format is `docs/protocol.md`.
 *
 * Every packet: a 16-byte big-endian header (u32 packet length including the header, u16 header
 * length = 16, u16 version, u32 operation, u32 sequence), then the body.
 */

/** Header length in bytes; always 16 (docs/protocol.md, "Packets"). */
export const HEADER_LEN = 16;

/** Operation codes (docs/protocol.md, "Operations"). Ops >= 1000 are the fabric's own. */
export const Op = {
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
  ACK: 1006,
} as const;

/** Packet versions: 0 raw body, 1 heartbeat/control, 2 zlib (RFC 1950) batch, 3 brotli batch. */
export const Version = { RAW: 0, CONTROL: 1, ZLIB: 2, BROTLI: 3 } as const;

/** One packet as read off the wire. `body` is a view into the received bytes. */
export interface Packet {
  version: number;
  op: number;
  seq: number;
  body: Uint8Array;
}

/** A frame that does not follow docs/protocol.md; the connection cannot go on. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

const utf8 = new TextEncoder();
const text = new TextDecoder();

/** Encodes one packet; a string body is UTF-8 encoded. */
export function encodePacket(op: number, version: number, seq: number, body?: string | Uint8Array): Uint8Array {
  const bytes = typeof body === 'string' ? utf8.encode(body) : (body ?? new Uint8Array(0));
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

/**
 * Splits a run of whole packets (one WebSocket message, or a decompressed batch body).
 * @throws ProtocolError on a truncated packet or a header length other than 16.
 */
export function splitPackets(bytes: Uint8Array): Packet[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const packets: Packet[] = [];
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
      body: bytes.subarray(at + HEADER_LEN, at + len),
    });
    at += len;
  }
  return packets;
}

/** Largest packet a `PacketReader` accepts (the gateway's own frames are far smaller). */
export const MAX_PACKET_BYTES = 16 * 1024 * 1024;

/**
 * Reassembles whole packets from a byte stream (TCP-style framing, as on a WebTransport
 * stream), where chunks end anywhere: `push` returns the run of whole packets completed so
 * far (for `splitPackets`), or undefined while a packet is still partial.
 */
export class PacketReader {
  private buffered = new Uint8Array(0);

  /** @throws ProtocolError on a header length other than 16 or a length out of range. */
  push(chunk: Uint8Array): Uint8Array | undefined {
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
    // Copied, so the kept tail does not pin the whole chunk.
    this.buffered = bytes.slice(at);
    return at === 0 ? undefined : bytes.subarray(0, at);
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Decompresses a batch body; returns the decompressed bytes. */
export type Decompress = (body: Uint8Array) => Promise<Uint8Array>;

/** Decoders for compressed batches, by version. A version without one cannot be asked for. */
export interface Decompressors {
  zlib?: Decompress;
  brotli?: Decompress;
}

/**
 * zlib (RFC 1950) through the platform's own `DecompressionStream('deflate')` (every current
 * browser, Node 18+), or undefined where it is missing.
 */
export function nativeZlib(): Decompress | undefined {
  if (typeof DecompressionStream !== 'function') return undefined;
  return async (body) => {
    const stream = new Blob([body as BlobPart]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  };
}

/**
 * Brotli through `DecompressionStream('brotli')` where the platform has it (a Compression
 * Streams proposal; Chromium 148 refuses the format), else undefined.
 */
export function nativeBrotli(): Decompress | undefined {
  if (typeof DecompressionStream !== 'function') return undefined;
  try {
    new DecompressionStream('brotli' as CompressionFormat);
  } catch {
    return undefined;
  }
  return async (body) => {
    const stream = new Blob([body as BlobPart]).stream().pipeThrough(new DecompressionStream('brotli' as CompressionFormat));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  };
}

/**
 * The protover to put in AUTH: brotli (3) when a brotli decoder is given, else zlib (2) when one
 * is, else raw (0). The gateway then sends every message in that encoding.
 */
export function chooseProtover(decompressors: Decompressors): 0 | 2 | 3 {
  if (decompressors.brotli) return 3;
  if (decompressors.zlib) return 2;
  return 0;
}

/**
 * The business messages (op 5, version 0 bodies) in one MESSAGE packet, unpacking a version 2 or
 * 3 batch into its inner packets (docs/protocol.md, "Batches").
 * @throws ProtocolError when the batch's version has no decompressor or an inner packet is bad.
 */
export async function messageBodies(packet: Packet, decompressors: Decompressors): Promise<Uint8Array[]> {
  switch (packet.version) {
    case Version.RAW:
    case Version.CONTROL:
      return [packet.body];
    case Version.ZLIB:
    case Version.BROTLI: {
      const decode = packet.version === Version.ZLIB ? decompressors.zlib : decompressors.brotli;
      if (!decode) throw new ProtocolError(`no decoder for a version ${packet.version} batch`);
      let run: Uint8Array;
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

/** HEARTBEAT_REPLY's body: the room's online count, u32 BE. */
export function onlineCount(packet: Packet): number {
  if (packet.body.length !== 4) throw new ProtocolError(`HEARTBEAT_REPLY body is ${packet.body.length} bytes, not 4`);
  return new DataView(packet.body.buffer, packet.body.byteOffset, 4).getUint32(0);
}

/** A JSON body (AUTH_REPLY, UPSTREAM_REPLY, DRAIN, ...). @throws ProtocolError if not JSON. */
export function jsonBody<T = Record<string, unknown>>(packet: Packet): T {
  try {
    return JSON.parse(text.decode(packet.body)) as T;
  } catch {
    throw new ProtocolError(`op ${packet.op} body is not JSON`);
  }
}

/** Decodes a body as UTF-8 text. */
export function bodyText(body: Uint8Array): string {
  return text.decode(body);
}
