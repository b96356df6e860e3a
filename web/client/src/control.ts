/** Control's HTTP API as the client uses it (docs/control.md). */

/** One gateway from `GET /v1/nodes`: `host:port` per transport, empty when not offered. */
export interface Node {
  node_id: string;
  region: string;
  ws: string;
  wss: string;
  tcp: string;
  tls: string;
  quic: string;
  /** WebTransport over HTTP/3 (`host:port`, the QUIC port); absent from older controls. */
  webtransport?: string;
  /**
   * SHA-256 of the gateway's QUIC certificate (DER), lowercase hex: given to the browser as
   * `serverCertificateHashes` for a self-signed certificate.
   */
  cert_sha256?: string;
  load: number;
}

/** The body of `GET /v1/nodes`. */
export interface NodeList {
  region: string;
  policy: { mode: 'long_connection' | 'polling' | string };
  nodes: Node[];
  ttl_secs: number;
}

/** Control answered with an error status; `status` 400 means the request is wrong (no retry helps). */
export class ControlError extends Error {
  override name = 'ControlError';
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/**
 * `GET {control}/v1/nodes?region=&uid=`: gateways, the client's region first, least loaded
 * first.
 * @throws ControlError on an error status; a TypeError from `fetch` when control is unreachable.
 */
export async function fetchNodes(control: string, query: { region?: string; uid?: number }): Promise<NodeList> {
  const params = new URLSearchParams();
  if (query.region) params.set('region', query.region);
  if (query.uid !== undefined) params.set('uid', String(query.uid));
  const response = await fetch(`${control.replace(/\/+$/, '')}/v1/nodes?${params}`, { cache: 'no-store' });
  const body = await response.text();
  if (!response.ok) throw new ControlError(`GET /v1/nodes: HTTP ${response.status}: ${errorText(body)}`, response.status);
  return JSON.parse(body) as NodeList;
}

/**
 * `POST {control}/v1/tokens` for `uid` and `rooms`, the way the local demo fabric allows (no
 * API key). Production pages get their token from their own backend instead and pass that
 * function as `DanmuClientOptions.token`.
 * @throws ControlError on an error status.
 */
export async function demoToken(control: string, uid: number, rooms: number[]): Promise<string> {
  const response = await fetch(`${control.replace(/\/+$/, '')}/v1/tokens`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ uid, rooms }),
  });
  const body = await response.text();
  if (!response.ok) throw new ControlError(`POST /v1/tokens: HTTP ${response.status}: ${errorText(body)}`, response.status);
  return (JSON.parse(body) as { token: string }).token;
}

function errorText(body: string): string {
  try {
    return (JSON.parse(body) as { error?: string }).error ?? body;
  } catch {
    return body;
  }
}
