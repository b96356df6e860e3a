// An unmodified `bilibili-live-ws` client (npm, pinned in package.json) joined to a danmu
// gateway. Run by tests/tests/third_party_clients.rs; prints one JSON line per event:
//   {"event":"live"}                 AUTH succeeded
//   {"event":"msg","data":{...}}     a business message, as the library decoded it
// and exits 0 after `count` messages, or 1 on an error, a close or after 30 s.
//
//   node receive.js <ws|tcp> <host:port> <room> <uid> <protover> <token> <count>
'use strict'
const { LiveWS, LiveTCP } = require('bilibili-live-ws')

const [transport, addr, room, uid, protover, key, count] = process.argv.slice(2)
const [host, port] = addr.split(':')
const options = { protover: Number(protover), key, uid: Number(uid) }
const live = transport === 'ws'
  ? new LiveWS(Number(room), { ...options, address: `ws://${addr}/sub` })
  : new LiveTCP(Number(room), { ...options, host, port: Number(port) })

const print = (value) => process.stdout.write(JSON.stringify(value) + '\n')
let left = Number(count)
const fail = (why) => {
  print({ event: 'error', why: String(why) })
  process.exit(1)
}
setTimeout(() => fail('timed out'), 30000)
live.on('live', () => print({ event: 'live' }))
live.on('msg', (data) => {
  print({ event: 'msg', data })
  left -= 1
  if (left === 0) {
    live.close()
    process.exit(0)
  }
})
live.on('error', fail)
live.on('close', () => fail('closed by the server'))
