/**
 * danmu browser client: an ES module, no framework. See ../README.md.
 *
 * ```ts
 * import { DanmuClient, demoToken } from './danmu-client.js';
 * const client = new DanmuClient({ control, room: 1001, uid: 42, token: ({ uid, room }) => demoToken(control, uid, [room]) });
 * client.on('message', (m) => console.log(m.data));
 * client.start();
 * ```
 */
export * from './codec.js';
export * from './codes.js';
export * from './control.js';
export * from './transport.js';
export * from './client.js';
