/** Reply codes in words (docs/protocol.md, "Reply codes" and "Upstream danmu"). */

const AUTH: Record<number, string> = {
  0: 'authenticated',
  [-101]: 'token invalid',
  [-102]: 'token expired',
  [-103]: 'room not allowed by the token',
  [-104]: 'bad AUTH request',
  [-105]: 'uid does not match the token',
  [-106]: 'unsupported protover',
};

const UPSTREAM: Record<number, string> = {
  0: 'sent',
  1: 'sent, with blocked words masked',
  [-201]: 'rate limited',
  [-202]: 'this user may not send danmu',
  [-203]: 'this address may not send danmu',
  [-204]: 'contains a blocked word',
  [-205]: 'bad request',
  [-206]: 'too long',
  [-207]: 'sending is off on this gateway',
  [-208]: 'gateway busy, try again',
};

/** AUTH_REPLY `code` in words. */
export function authMeaning(code: number): string {
  return AUTH[code] ?? 'unknown code';
}

/**
 * Whether a new token cannot fix an AUTH refusal: -103 (room), -104 (request), -105 (uid),
 * -106 (protover) are the client's mistakes; -101/-102 are fixed by a fresh token.
 */
export function isFinalAuthCode(code: number): boolean {
  return code === -103 || code === -104 || code === -105 || code === -106;
}

/** UPSTREAM_REPLY `code` in words. */
export function upstreamMeaning(code: number): string {
  return UPSTREAM[code] ?? 'unknown code';
}
