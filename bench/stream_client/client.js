// One StreamPings stream from a Node.js process: gRPC's Python client costs ~100 µs of CPU a
// message on these machines, more than the server it would measure; grpc-js costs a fraction.
//
//   node client.js TARGET AUTH MESSAGES_FILE SECONDS RATE_PER_S START_AT_MS WINDOW
//
// MESSAGES_FILE holds serialized occupancy.v1.StreamPingsRequest messages (a Ping's bytes are
// one), each after its length (uint32 LE).
// RATE_PER_S 0 sends as fast as the server acks: at most WINDOW messages unacked, as a device
// with a bounded buffer would. Prints one JSON line:
// {"acked": n, "elapsed_s": s, "latencies_ms": [...]}, a latency per acked message.
const fs = require('fs');
const grpc = require('@grpc/grpc-js');

const [target, auth, file, seconds, rate, startAt, windowArg] = process.argv.slice(2);
const window = Number(windowArg);
const data = fs.readFileSync(file);
const messages = [];
for (let off = 0; off < data.length;) {
  const n = data.readUInt32LE(off);
  messages.push(data.subarray(off + 4, off + 4 + n));
  off += 4 + n;
}

// the cumulative counts of a StreamPingsResponse (fields 1-3, varints); rejections are skipped
function ackTotal(buf) {
  let i = 0, total = 0;
  const varint = () => {
    let v = 0, mul = 1, b;
    do { b = buf[i++]; v += (b & 0x7f) * mul; mul *= 128; } while (b & 0x80);
    return v;
  };
  while (i < buf.length) {
    const tag = varint(), field = Math.floor(tag / 8), wire = tag & 7;
    if (wire === 0) { const v = varint(); if (field <= 3) total += v; }
    else if (wire === 2) { i += varint(); }
    else throw new Error(`unexpected wire type ${wire}`);
  }
  return total;
}

const client = new grpc.Client(target, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.set('authorization', auth);

function run() {
  const sentAt = [];
  const latencies = [];
  let covered = 0, acked = 0, waiting = false, ended = false;
  const t0 = performance.now();
  const stopAt = t0 + Number(seconds) * 1000;
  const call = client.makeBidiStreamRequest(
    '/occupancy.v1.IngestService/StreamPings', x => x, x => x, metadata, {});
  call.on('data', (ack) => {
    const now = performance.now();
    acked = ackTotal(ack);
    for (; covered < acked && covered < sentAt.length; covered++) {
      latencies.push(now - sentAt[covered]);
    }
    if (waiting) { waiting = false; pump(); }
  });
  call.on('error', (err) => { console.error(String(err)); process.exit(1); });
  call.on('end', () => {
    const elapsed = (performance.now() - t0) / 1000;
    const line = JSON.stringify({ acked, elapsed_s: elapsed, latencies_ms: latencies }) + '\n';
    process.stdout.write(line, () => process.exit(0));  // a pipe drains asynchronously
  });
  let i = 0;
  const perMs = Number(rate) / 1000;
  function pump() {
    if (ended) return;
    while (i < messages.length) {
      const now = performance.now();
      if (now >= stopAt) break;
      if (perMs > 0 && i >= (now - t0) * perMs) { setTimeout(pump, 1); return; }
      if (i - acked >= window) { waiting = true; return; }  // the next ack resumes
      sentAt.push(now);
      const more = call.write(messages[i++]);
      if (!more) { call.once('drain', pump); return; }
    }
    if (!ended) { ended = true; call.end(); }
  }
  pump();
}

// every stream starts at the same instant, once all have loaded their messages
setTimeout(run, Math.max(0, Number(startAt) - Date.now()));
