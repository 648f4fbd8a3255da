// SPDX-License-Identifier: MIT
// Node's http2 module as an RFC 8441 extended CONNECT client, for test_63_h2_node.py.
// Usage: node h2_extended.js MODE URL [ARGS...]; prints one JSON object on stdout.
//   settings URL                       what the server's first SETTINGS said
//   websocket URL PATH MESSAGE...      :protocol websocket; each MESSAGE is sent as a masked
//                                      text frame and its echo awaited; then a close handshake
//   connect-udp URL PATH PAYLOAD...    :protocol connect-udp; each PAYLOAD is sent as a
//                                      DATAGRAM capsule (RFC 9297) and its echo awaited
// Node refuses to send :protocol until the server has enabled it, so every request waits for
// the server's SETTINGS first. Exits 1 with {"error": ...} on anything unexpected.
'use strict';
const http2 = require('node:http2');
const crypto = require('node:crypto');

const [mode, url, ...args] = process.argv.slice(2);
const deadline = setTimeout(() => fail('timed out'), 15000);

function done(obj) {
  clearTimeout(deadline);
  process.stdout.write(JSON.stringify(obj) + '\n');
  process.exit(0);
}

function fail(msg) {
  process.stdout.write(JSON.stringify({error: String(msg)}) + '\n');
  process.exit(1);
}

// ---- RFC 9000 §16 variable-length integers, RFC 9297 §3.2 capsules -------------------------

function varint(v) {
  if (v < 0x40) return Buffer.from([v]);
  if (v < 0x4000) return Buffer.from([0x40 | (v >> 8), v & 0xff]);
  const b = Buffer.alloc(4);
  b.writeUInt32BE((0x80000000 | v) >>> 0);
  return b;
}

function readVarint(buf, off) {
  if (off >= buf.length) return null;
  const n = 1 << (buf[off] >> 6);
  if (off + n > buf.length) return null;
  let v = buf[off] & 0x3f;
  for (let i = 1; i < n; i++) v = v * 256 + buf[off + i];
  return [v, off + n];
}

// Returns [capsules, rest]: every complete {type, value} at the front of @buf.
function parseCapsules(buf) {
  const out = [];
  let off = 0;
  for (;;) {
    const t = readVarint(buf, off);
    if (!t) break;
    const l = readVarint(buf, t[1]);
    if (!l || l[1] + l[0] > buf.length) break;
    out.push({type: t[0], value: buf.subarray(l[1], l[1] + l[0])});
    off = l[1] + l[0];
  }
  return [out, buf.subarray(off)];
}

// ---- RFC 6455 §5.2 frames: the client masks, the server does not ---------------------------

function wsFrame(opcode, payload) {
  const mask = crypto.randomBytes(4);
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n])
                       : Buffer.from([0x80 | opcode, 0x80 | 126, n >> 8, n & 0xff]);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

function parseWsFrames(buf) {
  const out = [];
  let off = 0;
  while (buf.length - off >= 2) {
    let n = buf[off + 1] & 0x7f, h = 2;
    if (n === 126) {
      if (buf.length - off < 4) break;
      n = buf.readUInt16BE(off + 2);
      h = 4;
    } else if (n === 127) {
      break; // the tests never send that much
    }
    if (buf.length - off < h + n) break;
    out.push({opcode: buf[off] & 0x0f, masked: (buf[off + 1] & 0x80) !== 0,
              payload: buf.subarray(off + h, off + h + n)});
    off += h + n;
  }
  return [out, buf.subarray(off)];
}

// ---- the session ---------------------------------------------------------------------------

const session = http2.connect(url);
session.on('error', (e) => fail('session: ' + e.message));
session.once('remoteSettings', (settings) => {
  const enabled = settings.enableConnectProtocol === true;
  if (mode === 'settings') {
    done({enableConnectProtocol: enabled, maxConcurrentStreams: settings.maxConcurrentStreams});
  }
  if (!enabled) fail('the server did not send SETTINGS_ENABLE_CONNECT_PROTOCOL=1');
  const authority = new URL(url).host;
  const [path, ...items] = args;
  const proto = mode === 'websocket' ? 'websocket' : 'connect-udp';
  const headers = {':method': 'CONNECT', ':protocol': proto, ':path': path,
                   ':scheme': proto === 'websocket' ? 'http' : 'https', ':authority': authority};
  if (proto === 'websocket') headers['sec-websocket-version'] = '13';
  else headers['capsule-protocol'] = '?1';
  const req = session.request(headers, {endStream: false});
  const result = {status: null, received: [], skipped: 0};
  let buf = Buffer.alloc(0);
  let next = 0;

  function sendNext() {
    if (next < items.length) {
      const p = Buffer.from(items[next++]);
      req.write(proto === 'websocket' ? wsFrame(0x1, p) : Buffer.concat([
        varint(0), varint(p.length + 1), varint(0), p]));
    } else if (proto === 'websocket' && !result.closeSent) {
      result.closeSent = true;
      req.write(wsFrame(0x8, Buffer.from([0x03, 0xe8])));
    } else {
      req.end();
    }
  }

  req.on('response', (h) => {
    result.status = h[':status'];
    result.capsuleProtocol = h['capsule-protocol'] || null;
    if (result.status !== 200) {
      req.resume();
      req.on('end', () => { session.close(); done(result); });
      return;
    }
    sendNext();
  });
  req.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (proto === 'websocket') {
      const [frames, rest] = parseWsFrames(buf);
      buf = rest;
      for (const f of frames) {
        if (f.masked) fail('server frame masked');
        if (f.opcode === 0x8) {
          result.closeCode = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
          req.end();
          continue;
        }
        result.received.push(f.payload.toString());
        sendNext();
      }
    } else {
      const [caps, rest] = parseCapsules(buf);
      buf = rest;
      for (const c of caps) {
        const ctx = readVarint(c.value, 0);
        if (c.type !== 0 || !ctx || ctx[0] !== 0) {
          result.skipped++;
          continue;
        }
        result.received.push(c.value.subarray(ctx[1]).toString());
        sendNext();
      }
    }
  });
  req.on('end', () => { session.close(); done(result); });
  req.on('error', (e) => fail('stream: ' + e.message));
});
