/**
 * Cards for what is not a bullet comment: gifts (`SEND_GIFT`), super chats, and notices (any
 * other message with a text, e.g. `NOTICE_MSG` or a high-priority `ROOM_NOTICE`). Built with
 * textContent only: business payloads are never HTML.
 */

type Json = Record<string, unknown>;

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v ? v : typeof v === 'number' ? String(v) : undefined;
}

function card(kind: 'gift' | 'notice', icon: string, title: (Node | string)[], detail: string): HTMLLIElement {
  const li = document.createElement('li');
  li.className = `card ${kind}`;
  const i = document.createElement('div');
  i.className = 'icon';
  i.textContent = icon;
  const t = document.createElement('div');
  t.className = 'title';
  t.append(...title);
  const d = document.createElement('div');
  d.className = 'detail';
  d.textContent = detail;
  li.append(i, t, d);
  return li;
}

function em(text: string): HTMLElement {
  const e = document.createElement('em');
  e.textContent = text;
  return e;
}

const time = () => new Date().toLocaleTimeString();

/** The card for `message`, or undefined when it is nothing to show (unknown, no text). */
export function cardFor(message: Json): HTMLLIElement | undefined {
  const cmd = str(message['cmd']) ?? '';
  const data = (typeof message['data'] === 'object' && message['data'] !== null ? message['data'] : {}) as Json;
  if (cmd === 'SEND_GIFT') {
    const who = str(data['uname']) ?? `uid ${str(data['uid']) ?? '?'}`;
    const gift = str(data['giftName']) ?? 'a gift';
    const num = str(data['num']) ?? '1';
    const price = typeof data['price'] === 'number' ? ` · ${data['price']} each` : '';
    return card('gift', '🎁', [`${who} ${str(data['action']) ?? 'sent'} `, em(`${gift} ×${num}`)], `${time()}${price}`);
  }
  if (cmd === 'SUPER_CHAT_MESSAGE') {
    const who = str((data['user_info'] as Json | undefined)?.['uname']) ?? str(data['uname']) ?? 'someone';
    return card('gift', '💬', [`${who}: `, em(str(data['message']) ?? '')], `${time()} · super chat ¥${str(data['price']) ?? '?'}`);
  }
  const text = str(message['msg']) ?? str(message['text']) ?? str(data['msg']) ?? str(data['text']) ?? str(message['msg_common']);
  if (!text) return undefined;
  const title = str(message['title']) ?? str(data['title']);
  return card('notice', '📢', [title ? `${title}: ${text}` : text], `${time()} · ${cmd || 'notice'}`);
}
