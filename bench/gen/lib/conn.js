'use strict';
// A minimal WebSocket client over a raw TCP socket: the handshake by hand,
// then an RFC 6455 frame codec (masked client frames, unmasked server
// frames). No library on the hot path, so that one generator core drives
// several server cores' worth of frames; `ws` is only used by selftest.js to
// check this codec against a real server.
//
// What it supports: text and binary messages (fragmented or not), ping →
// pong, the close handshake, `Authorization: Bearer` on the upgrade, a
// chosen local (source) address. What it does not: extensions
// (permessage-deflate is never offered), TLS, redirects.

const net = require('node:net');
const crypto = require('node:crypto');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const CRLFCRLF = Buffer.from('\r\n\r\n');
const MAX_HEAD = 16384;

// Masking keys come from a pool of random bytes, refilled when used up
// (one randomFillSync per 1,024 frames instead of one per frame).
const maskPool = Buffer.alloc(4096);
let maskAt = maskPool.length;
function nextMask() {
  if (maskAt + 4 > maskPool.length) {
    crypto.randomFillSync(maskPool);
    maskAt = 0;
  }
  maskAt += 4;
  return maskAt - 4;
}

// One client frame: FIN set, masked. *payload* is a string (text frame,
// opcode 1) or a Buffer (binary 2, or a control frame).
function encodeFrame(opcode, payload) {
  const isString = typeof payload === 'string';
  const len = isString ? Buffer.byteLength(payload) : payload.length;
  const head = len < 126 ? 6 : len < 65536 ? 8 : 14;
  const frame = Buffer.allocUnsafe(head + len);
  frame[0] = 0x80 | opcode;
  if (len < 126) {
    frame[1] = 0x80 | len;
  } else if (len < 65536) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(len, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
    frame.writeUInt32BE(len >>> 0, 6);
  }
  const m = nextMask();
  const k0 = maskPool[m], k1 = maskPool[m + 1], k2 = maskPool[m + 2], k3 = maskPool[m + 3];
  frame[head - 4] = k0; frame[head - 3] = k1; frame[head - 2] = k2; frame[head - 1] = k3;
  if (isString) frame.write(payload, head, len, 'utf8');
  else payload.copy(frame, head);
  // XOR the payload with the key, four bytes at a time where possible.
  let i = head;
  const end = head + len;
  for (; i + 3 < end; i += 4) {
    frame[i] ^= k0; frame[i + 1] ^= k1; frame[i + 2] ^= k2; frame[i + 3] ^= k3;
  }
  for (let j = 0; i < end; i++, j++) frame[i] ^= maskPool[m + j];
  return frame;
}

function closePayload(code, reason = '') {
  const body = Buffer.allocUnsafe(2 + Buffer.byteLength(reason));
  body.writeUInt16BE(code, 0);
  body.write(reason, 2);
  return body;
}

function newKey() {
  return crypto.randomBytes(16).toString('base64');
}

function acceptFor(key) {
  return crypto.createHash('sha1').update(key + GUID).digest('base64');
}

// States of a connection.
const HANDSHAKE = 0;
const OPEN = 1;
const CLOSING = 2; // we sent a close frame, waiting for the server's
const CLOSED = 3;

// Handlers (all optional), called with the connection first:
//   onOpen(conn)                      101 received and checked
//   onText(conn, string)              a complete text message
//   onBinary(conn, Buffer)            a complete binary message
//   onPing(conn)                      a ping arrived (already answered)
//   onRefused(conn, status)           an HTTP answer other than 101
//   onClose(conn)                     the socket is gone; see conn.closeCode,
//                                     conn.error, conn.status
class Conn {
  constructor(options, handlers) {
    this.h = handlers;
    this.state = HANDSHAKE;
    this.status = 0; // HTTP status of the upgrade answer (0: none yet)
    this.closeCode = 0; // the server's close code (0: none received)
    this.error = null; // errno name, 'timeout', 'bad_response', 'bad_accept'
    this.user = null; // free slot for the caller
    this.corked = false;
    this.sentClose = false;
    this._head = null; // bytes of the HTTP answer so far
    this._buf = null; // unparsed frame bytes
    this._frags = null; // fragments of a message in progress
    this._fragOp = 0;
    this._timer = null;
    const key = newKey();
    this._accept = options.checkAccept === false ? null : acceptFor(key);
    const sock = net.connect({
      host: options.host,
      port: options.port,
      localAddress: options.localAddress || undefined,
      noDelay: true,
    });
    this.sock = sock;
    const auth = options.token ? `Authorization: Bearer ${options.token}\r\n` : '';
    sock.write(
      `GET ${options.path || '/'} HTTP/1.1\r\nHost: ${options.host}:${options.port}\r\n` +
      'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${auth}\r\n`);
    if (options.timeoutMs) {
      this._timer = setTimeout(() => this._fail('timeout'), options.timeoutMs);
    }
    sock.on('data', (chunk) => this._onData(chunk));
    sock.on('error', (err) => { if (!this.error) this.error = err.code || 'socket_error'; });
    sock.on('close', () => {
      if (this._timer) clearTimeout(this._timer);
      this.state = CLOSED;
      if (this.h.onClose) this.h.onClose(this);
    });
  }

  get open() {
    return this.state === OPEN;
  }

  // Send a text message. Writes made in one tick go out in one socket write.
  send(text) {
    if (this.state !== OPEN) return false;
    this._write(encodeFrame(1, text));
    return true;
  }

  // Start the close handshake (the server answers with its close, then hangs up).
  close(code = 1000, reason = '') {
    if (this.state === HANDSHAKE) return this.destroy();
    if (this.state !== OPEN) return undefined;
    this.state = CLOSING;
    this.sentClose = true;
    this._write(encodeFrame(8, closePayload(code, reason)));
    return undefined;
  }

  // Close within *ms* or drop the socket.
  closeWithin(ms, code = 1000) {
    this.close(code);
    if (this.state !== CLOSED) {
      if (this._timer) clearTimeout(this._timer);
      this._timer = setTimeout(() => this.destroy(), ms);
    }
  }

  destroy() {
    if (this.state !== CLOSED) this.sock.destroy();
  }

  // Arm (or clear, with 0) a deadline after which the socket is dropped as 'timeout'.
  deadline(ms) {
    if (this._timer) clearTimeout(this._timer);
    this._timer = ms ? setTimeout(() => this._fail('timeout'), ms) : null;
  }

  _fail(kind) {
    if (!this.error) this.error = kind;
    this.sock.destroy();
  }

  _write(buf) {
    if (!this.corked) {
      this.corked = true;
      this.sock.cork();
      process.nextTick(uncork, this);
    }
    this.sock.write(buf);
  }

  _onData(chunk) {
    if (this.state === HANDSHAKE) {
      const head = this._head ? Buffer.concat([this._head, chunk]) : chunk;
      const end = head.indexOf(CRLFCRLF);
      if (end < 0) {
        if (head.length > MAX_HEAD) return this._fail('bad_response');
        this._head = head;
        return undefined;
      }
      this._head = null;
      if (!this._onHead(head.toString('latin1', 0, end))) return undefined;
      chunk = head.subarray(end + 4);
      if (chunk.length === 0) return undefined;
    }
    this._frames(chunk);
    return undefined;
  }

  // The HTTP answer's head; true if upgraded.
  _onHead(text) {
    const match = /^HTTP\/1\.[01] (\d{3})/.exec(text);
    if (!match) {
      this._fail('bad_response');
      return false;
    }
    this.status = Number(match[1]);
    if (this.status !== 101) {
      if (this._timer) clearTimeout(this._timer);
      this._timer = null;
      if (this.h.onRefused) this.h.onRefused(this, this.status);
      this.sock.destroy();
      return false;
    }
    if (this._accept !== null) {
      const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(text);
      if (!accept || accept[1] !== this._accept) {
        this._fail('bad_accept');
        return false;
      }
    }
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    this.state = OPEN;
    if (this.h.onOpen) this.h.onOpen(this);
    return this.state === OPEN || this.state === CLOSING;
  }

  // Parse every complete frame in the buffered bytes plus *chunk*.
  _frames(chunk) {
    let buf = this._buf ? Buffer.concat([this._buf, chunk]) : chunk;
    let at = 0;
    const n = buf.length;
    while (n - at >= 2 && this.state !== CLOSED) {
      const b0 = buf[at];
      const b1 = buf[at + 1];
      let len = b1 & 0x7f;
      let head = 2;
      if (len === 126) {
        if (n - at < 4) break;
        len = buf.readUInt16BE(at + 2);
        head = 4;
      } else if (len === 127) {
        if (n - at < 10) break;
        len = buf.readUInt32BE(at + 2) * 2 ** 32 + buf.readUInt32BE(at + 6);
        head = 10;
      }
      const masked = (b1 & 0x80) !== 0; // servers must not mask; tolerated anyway
      if (masked) head += 4;
      if (n - at < head + len) break;
      let payload = buf.subarray(at + head, at + head + len);
      if (masked) {
        payload = Buffer.from(payload);
        for (let i = 0; i < len; i++) payload[i] ^= buf[at + head - 4 + (i & 3)];
      }
      at += head + len;
      this._frame(b0 & 0x80, b0 & 0x0f, payload);
    }
    // Keep the unparsed tail (copied, so a large chunk is not retained).
    this._buf = at === n ? null : Buffer.from(buf.subarray(at));
  }

  _frame(fin, opcode, payload) {
    if (opcode >= 8) return this._control(opcode, payload);
    if (opcode !== 0) {
      if (!fin) {
        this._frags = [Buffer.from(payload)];
        this._fragOp = opcode;
        return undefined;
      }
      return this._message(opcode, payload);
    }
    if (this._frags === null) return this._fail('bad_frame');
    this._frags.push(Buffer.from(payload));
    if (!fin) return undefined;
    const whole = Buffer.concat(this._frags);
    this._frags = null;
    return this._message(this._fragOp, whole);
  }

  _message(opcode, payload) {
    if (this.state !== OPEN) return; // after our close: ignored
    if (opcode === 1) {
      if (this.h.onText) this.h.onText(this, payload.toString('utf8'));
    } else if (this.h.onBinary) {
      this.h.onBinary(this, payload);
    }
  }

  _control(opcode, payload) {
    if (opcode === 9) { // ping → pong with the same data
      if (this.state === OPEN) this._write(encodeFrame(10, Buffer.from(payload)));
      if (this.h.onPing) this.h.onPing(this);
    } else if (opcode === 8) { // close
      this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      if (!this.sentClose) { // answer with the same code, then hang up
        this.sentClose = true;
        this._write(encodeFrame(8, payload.length >= 2 ? Buffer.from(payload.subarray(0, 2))
          : Buffer.alloc(0)));
      }
      this.state = CLOSING;
      this.sock.end();
    }
  }
}

function uncork(conn) {
  conn.corked = false;
  conn.sock.uncork();
}

module.exports = { Conn, encodeFrame, acceptFor };
