// The load generator: a child process (never the broker's event loop) that drives one server
// over raw sockets with pre-encoded RESP, and reports how busy it was itself so that a
// saturated generator is not mistaken for a slow server.
//
// Protocol with the parent (IPC): it receives {job}, may send {type:'ready'} and wait for
// {type:'release'} (idle connections), and ends with {type:'result', result} or
// {type:'error', message}. It exits when the parent goes away.
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { connectFrame, NatsScanner, PING, PONG, pubFrame, subFrame, subjectOf } from './nats.js';
import { command, payload, ReplyScanner, writeDigits13 } from './resp.js';

// One read buffer shared by every socket: each read is consumed before the next one happens,
// so reading allocates nothing.
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

process.on('disconnect', () => process.exit(0));
process.on('SIGINT', () => process.exit(130));

let releaseWaiter;
process.on('message', (message) => {
  if (message.type === 'job') {
    run(message.job).then(
      (result) => process.send({ type: 'result', result }, () => process.exit(0)),
      (error) =>
        process.send({ type: 'error', message: error instanceof Error ? error.stack : String(error) }, () =>
          process.exit(1),
        ),
    );
  } else if (message.type === 'release' && releaseWaiter) {
    releaseWaiter();
  }
});

function run(job) {
  switch (job.kind) {
    case 'fanout':
      return fanout(job);
    case 'latency':
      return fanout(job);
    case 'idle':
      return idle(job);
    case 'storm':
      return storm(job);
    case 'pipeline':
      return pipeline(job);
    case 'query':
      return query(job);
    default:
      return Promise.reject(new Error(`unknown job ${job.kind}`));
  }
}

// ---- measuring ---------------------------------------------------------------------------

class Meter {
  constructor(pid, clkTck) {
    this.pid = pid;
    this.clkTck = clkTck;
  }
  start() {
    this.t0 = performance.now();
    this.cpu0 = process.cpuUsage();
    this.srv0 = serverTicks(this.pid);
    this.main0 = serverTicks(this.pid, this.pid);
    this.writes0 = serverWriteCalls(this.pid);
  }
  stop() {
    const ms = performance.now() - this.t0;
    const cpu = process.cpuUsage(this.cpu0);
    const srv1 = serverTicks(this.pid);
    const main1 = serverTicks(this.pid, this.pid);
    const writes1 = serverWriteCalls(this.pid);
    return {
      srvWriteCalls: this.writes0 === undefined || writes1 === undefined ? undefined : writes1 - this.writes0,
      seconds: ms / 1000,
      genBusy: ((cpu.user + cpu.system) / 1000 / ms) * 100,
      srvBusy:
        this.srv0 === undefined || srv1 === undefined
          ? undefined
          : (((srv1 - this.srv0) / this.clkTck) * 1000 * 100) / ms,
      // The event loop's share: the rest of srvBusy is V8's helper threads (GC, compilers) and
      // libuv's pool.
      srvMainBusy:
        this.main0 === undefined || main1 === undefined
          ? undefined
          : (((main1 - this.main0) / this.clkTck) * 1000 * 100) / ms,
    };
  }
}

/**
 * utime + stime of a process, or of one of its threads (`tid`), in clock ticks (/proc/<pid>/stat
 * fields 14 and 15).
 */
function serverTicks(pid, tid) {
  if (!pid) return undefined;
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}

/** Write-type syscalls (write, writev, send...) the server made so far: /proc/<pid>/io `syscw`. */
function serverWriteCalls(pid) {
  if (!pid) return undefined;
  try {
    const match = /^syscw: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'latin1'));
    return match === null ? undefined : Number(match[1]);
  } catch {
    return undefined;
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- connections -------------------------------------------------------------------------

/**
 * A raw connection whose input goes through a ReplyScanner. `hello` (AUTH, SUBSCRIBE...) is
 * written on connect; `ready` resolves once `expect` replies arrived (rejects on an error
 * reply or a close).
 */
class Conn {
  constructor(port, hello, expect, onPayloadTime, onInput, makeScanner) {
    this.scanner = makeScanner === undefined ? new ReplyScanner(onPayloadTime) : makeScanner(this, onPayloadTime);
    this.closedByPeer = false;
    this.expect = expect;
    this.onInput = onInput;
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.socket = net.connect({
      host: '127.0.0.1',
      port,
      noDelay: true,
      onread: {
        buffer: READ_BUFFER,
        callback: (n, buf) => {
          const scanner = this.scanner;
          const before = scanner.frames;
          scanner.feed(buf, 0, n, onPayloadTime === undefined ? 0 : performance.now() * 1000);
          if (this.resolveReady !== undefined) this.checkReady();
          if (this.onInput !== undefined) this.onInput(scanner.frames - before);
          return true;
        },
      },
    });
    this.socket.on('connect', () => {
      if (hello !== undefined) this.socket.write(hello);
      if (expect === 0) this.checkReady();
    });
    this.socket.on('error', (error) => {
      this.lastError = error;
    });
    this.socket.on('close', () => {
      this.closedByPeer = !this.closing;
      if (this.rejectReady !== undefined) {
        const reason = this.scanner.firstError ?? this.lastError?.message ?? 'connection closed';
        this.rejectReady(new Error(reason));
        this.resolveReady = this.rejectReady = undefined;
      }
    });
  }

  checkReady() {
    if (this.scanner.errors > 0) {
      this.rejectReady(new Error(this.scanner.firstError));
      this.resolveReady = this.rejectReady = undefined;
    } else if (this.scanner.frames >= this.expect) {
      this.resolveReady();
      this.resolveReady = this.rejectReady = undefined;
    }
  }

  write(data) {
    this.socket.write(data);
  }

  /** Closes with a RST: no TIME_WAIT left behind to eat the ephemeral ports of later cases. */
  reset() {
    this.closing = true;
    if (!this.socket.destroyed) {
      if (this.socket.connecting || this.socket.readyState !== 'open') this.socket.destroy();
      else this.socket.resetAndDestroy();
    }
  }
}

/** Opens `count` connections, at most `concurrency` of them handshaking at once. */
async function openMany(count, concurrency, make) {
  const conns = new Array(count);
  let next = 0;
  let failure;
  const worker = async () => {
    while (next < count && failure === undefined) {
      const index = next++;
      const conn = make(index);
      conns[index] = conn;
      try {
        await conn.ready;
      } catch (error) {
        failure ??= new Error(`connection ${index}: ${error.message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  if (failure !== undefined) {
    for (const conn of conns) conn?.reset();
    throw failure;
  }
  return conns;
}

function authCommand(auth) {
  return command('AUTH', auth);
}

// ---- what each server is sent ---------------------------------------------------------------

/**
 * How a target is spoken to: the subscriber's and publisher's first bytes and how many replies
 * they wait for, one publish as bytes (with where its payload copies start, for the latency
 * stamp), and how many replies a publish gets.
 *
 * - 'resp': PUBLISH (Redis, and the broker, which stores the event before it answers).
 * - 'resp-xadd': Redis keeping history as a user would build it, pipelined: `XADD <sandbox>
 *   MAXLEN ~ <n> * e <payload>` then `PUBLISH <sandbox> <payload>`, two replies per event.
 * - 'resp-lua': the same in one Lua script (`EVALSHA`, `job.luaSha`), which also puts the
 *   stream id in front of the published payload, so subscribers can resume from it.
 * - 'nats': NATS JetStream: core subscriptions on `ev.<sandbox>` and `PUB ev.<sandbox>
 *   <ack inbox>` to a stream, one JetStream ack per publish (stored before it is sent).
 */
function dialectOf(job) {
  const dialect = job.dialect ?? 'resp';
  const auth = authCommand(job.auth);
  const inRespCommand = (bytes, body) => {
    const at = bytes.indexOf(body.bytes);
    if (at < 0) throw new Error('payload not found in its command');
    return at + body.tOffset;
  };
  if (dialect === 'nats') {
    const ackInbox = (p) => `_INBOX.bench.ack${p}`;
    return {
      subscriberHello: (channels) =>
        Buffer.concat([connectFrame(job.auth), ...channels.map((c, i) => subFrame(subjectOf(c), i + 1)), PING]),
      subscriberExpect: () => 1,
      publisherHello: (p) => Buffer.concat([connectFrame(job.auth), subFrame(ackInbox(p), 1), PING]),
      publish: (channel, body, p) => {
        const frame = pubFrame(subjectOf(channel), ackInbox(p), body.bytes);
        return { bytes: frame.bytes, tAts: [frame.payloadAt + body.tOffset] };
      },
      replies: 1,
      makeScanner: (publisher) => (conn, onTime) => new NatsScanner(onTime, () => conn.socket.write(PONG), publisher),
    };
  }
  const resp = {
    subscriberHello: (channels) => Buffer.concat([auth, command('SUBSCRIBE', ...channels)]),
    subscriberExpect: (channels) => 1 + channels.length,
    publisherHello: () => auth,
    replies: 1,
    makeScanner: () => undefined,
  };
  const text = (body) => body.bytes.toString('latin1');
  if (dialect === 'resp-xadd') {
    return {
      ...resp,
      publish: (channel, body) => {
        const xadd = command('XADD', channel, 'MAXLEN', '~', job.maxLen ?? 10_000, '*', 'e', text(body));
        const publish = command('PUBLISH', channel, text(body));
        return {
          bytes: Buffer.concat([xadd, publish]),
          tAts: [inRespCommand(xadd, body), xadd.length + inRespCommand(publish, body)],
        };
      },
      replies: 2,
    };
  }
  if (dialect === 'resp-lua') {
    return {
      ...resp,
      publish: (channel, body) => {
        const bytes = command('EVALSHA', job.luaSha, 1, channel, text(body), job.maxLen ?? 10_000);
        return { bytes, tAts: [inRespCommand(bytes, body)] };
      },
    };
  }
  if (dialect !== 'resp') throw new Error(`unknown dialect ${dialect}`);
  return {
    ...resp,
    publish: (channel, body) => {
      const bytes = command('PUBLISH', channel, text(body));
      return { bytes, tAts: [inRespCommand(bytes, body)] };
    },
  };
}

// ---- fan-out throughput (cases 1-3) and latency (case 4) ----------------------------------

/**
 * Subscribers: `subsPerChannel` connections on each channel. Publishers: `publishers`
 * connections, channel i on publisher i % publishers, writing pre-encoded batches of PUBLISH.
 *
 * Throughput (kind 'fanout'): closed loop. Publishing stops while more than `inflightCap`
 * deliveries are outstanding (published x subscribers, minus received) or a publisher has
 * `depth` replies outstanding, so output buffers stay bounded and what is measured is the rate
 * the server sustains, not how much it can buffer.
 *
 * Latency (kind 'latency'): open loop at `rate` publishes/s, every payload stamped with its
 * send time; each received message gives one publish-to-receive sample.
 */
async function fanout(job) {
  const latencyMode = job.kind === 'latency';
  const fan = job.subsPerChannel;
  const dialect = dialectOf(job);
  const replies = dialect.replies;
  const body = payload(job.payloadSize);
  // Many sandboxes per subscriber connection (one subscriber each): as many channels on one
  // connection as `channelsPerSubscriber`.
  const perSub = job.channelsPerSubscriber ?? 1;
  if (perSub > 1 && fan !== 1) throw new Error('channelsPerSubscriber needs subsPerChannel 1');
  let received = 0;
  let published = 0;
  let stopped = false;
  let pubs = [];
  let samples = latencyMode ? new Float64Array(1 << 20) : undefined;
  let sampleCount = 0;
  let sampleFrom = Infinity;
  let sampleTo = Infinity;
  const onTime = latencyMode
    ? (sentMicros, nowMicros) => {
        if (sentMicros < sampleFrom || sentMicros >= sampleTo) return;
        if (sampleCount === samples.length) {
          const grown = new Float64Array(samples.length * 2);
          grown.set(samples);
          samples = grown;
        }
        samples[sampleCount++] = nowMicros - sentMicros;
      }
    : undefined;

  let pumpScheduled = false;
  const schedulePump = () => {
    if (!pumpScheduled && !latencyMode) {
      pumpScheduled = true;
      setImmediate(pump);
    }
  };
  const onDeliveries = (frames) => {
    received += frames;
    schedulePump();
  };

  // Subscribers first: each sends AUTH and SUBSCRIBE in one write; ready after +OK and the
  // confirmation. Counting starts after setup, so confirmations are not messages.
  const subscriberCount = Math.ceil((job.channels.length * fan) / perSub);
  // Latency: the first subscriber of each channel reads the send times (one sample per
  // publish is plenty); the others only count, which keeps the generator cheap.
  const subScanner = dialect.makeScanner(false);
  const subs = await openMany(subscriberCount, job.connectConcurrency ?? 256, (index) => {
    const channels =
      perSub === 1 ? [job.channels[Math.floor(index / fan)]] : job.channels.slice(index * perSub, (index + 1) * perSub);
    return new Conn(
      job.port,
      dialect.subscriberHello(channels),
      dialect.subscriberExpect(channels),
      index % fan === 0 ? onTime : undefined,
      undefined,
      subScanner,
    );
  });
  for (const sub of subs) {
    sub.scanner.frames = 0;
    sub.onInput = onDeliveries;
  }

  // Publishers, each with a pre-encoded batch cycling through its channels.
  const pubScanner = dialect.makeScanner(true);
  const publishers = await openMany(
    job.publishers,
    64,
    (p) => new Conn(job.port, dialect.publisherHello(p), 1, undefined, schedulePump, pubScanner),
  );
  publishers.forEach((pub, p) => {
    pub.scanner.frames = 0;
    pub.sent = 0;
    pub.channels = job.channels.filter((_, i) => i % job.publishers === p);
    // More publishers than channels: several publish to the same channel.
    if (pub.channels.length === 0) pub.channels = [job.channels[p % job.channels.length]];
    pub.commands = pub.channels.map((channel) => dialect.publish(channel, body, p));
    pub.next = 0;
    if (!latencyMode) {
      // Batches in a ring that goes through every channel of the publisher (one batch when it
      // has no more channels than a batch holds).
      pub.batches = [];
      const count = Math.max(1, Math.ceil(pub.commands.length / job.batch));
      for (let k = 0; k < count; k++) {
        const batch = [];
        for (let i = 0; i < job.batch; i++) batch.push(pub.commands[(k * job.batch + i) % pub.commands.length].bytes);
        pub.batches.push(Buffer.concat(batch));
      }
      pub.batchAt = 0;
    }
  });
  pubs = publishers;
  function pump() {
    pumpScheduled = false;
    if (stopped) return;
    for (;;) {
      let progressed = false;
      for (const pub of pubs) {
        if (pub.sent - pub.scanner.frames + job.batch * replies > job.depth * replies) continue;
        if ((published + job.batch) * fan - received > job.inflightCap) return;
        pub.write(pub.batches[pub.batchAt]);
        pub.batchAt = (pub.batchAt + 1) % pub.batches.length;
        pub.sent += job.batch * replies;
        published += job.batch;
        progressed = true;
      }
      if (!progressed) return;
    }
  }

  // Open loop: every millisecond, send what the schedule says is due, stamped with now.
  let timer;
  const startPacing = () => {
    const t0 = performance.now();
    let p = 0;
    timer = setInterval(() => {
      if (stopped) return;
      const due = Math.floor(((performance.now() - t0) / 1000) * job.rate) - published;
      if (due <= 0) return;
      const nowMicros = Math.round(performance.now() * 1000);
      // Spread the due publishes over the publishers, each getting one write.
      const perPub = new Map();
      for (let k = 0; k < due; k++) {
        const pub = pubs[p];
        p = (p + 1) % pubs.length;
        const cmd = pub.commands[pub.next];
        pub.next = (pub.next + 1) % pub.commands.length;
        let list = perPub.get(pub);
        if (list === undefined) perPub.set(pub, (list = []));
        list.push(cmd);
      }
      for (const [pub, list] of perPub) {
        let size = 0;
        for (const cmd of list) size += cmd.bytes.length;
        const out = Buffer.allocUnsafe(size);
        let at = 0;
        for (const cmd of list) {
          cmd.bytes.copy(out, at);
          for (const tAt of cmd.tAts) writeDigits13(out, at + tAt, nowMicros);
          at += cmd.bytes.length;
        }
        pub.write(out);
        pub.sent += list.length * replies;
      }
      published += due;
    }, 1);
  };

  const meter = new Meter(job.pid, job.clkTck);
  if (latencyMode) startPacing();
  else pump();
  await sleep(job.warmupMs);
  const received0 = received;
  const published0 = published;
  sampleFrom = Math.round(performance.now() * 1000);
  meter.start();
  await sleep(job.measureMs);
  const window = meter.stop();
  sampleTo = Math.round(performance.now() * 1000);
  const receivedInWindow = received - received0;
  const publishedInWindow = published - published0;
  stopped = true;
  if (timer) clearInterval(timer);

  // Drain: everything published must arrive (nothing lost, nobody disconnected). A server that
  // fell behind the offered rate (latency) is given a few seconds, then reported as behind.
  const drainDeadline = performance.now() + (latencyMode ? (job.drainMs ?? 3_000) : 10_000);
  while (received < published * fan && performance.now() < drainDeadline) await sleep(20);
  const dropped = subs.filter((s) => s.closedByPeer).length + pubs.filter((s) => s.closedByPeer).length;
  const errors = pubs.reduce((n, pub) => n + pub.scanner.errors, 0);
  const firstError = pubs.find((pub) => pub.scanner.firstError)?.scanner.firstError;
  for (const conn of [...subs, ...pubs]) conn.reset();

  const result = {
    ...window,
    delivered: receivedInWindow / window.seconds,
    published: publishedInWindow / window.seconds,
    lost: latencyMode ? 0 : published * fan - received,
    // Latency: deliveries still outstanding after the drain (the server could not keep up).
    behind: latencyMode ? published * fan - received : 0,
    offered: latencyMode ? job.rate * fan : undefined,
    dropped,
    errors,
    firstError,
  };
  if (latencyMode) {
    const sorted = samples.subarray(0, sampleCount).sort();
    result.samples = sampleCount;
    result.p50 = percentile(sorted, 50) / 1000;
    result.p99 = percentile(sorted, 99) / 1000;
    result.p999 = percentile(sorted, 99.9) / 1000;
    result.max = sorted[sorted.length - 1] / 1000;
  }
  return result;
}

// ---- idle connections (case 5) -----------------------------------------------------------

/** Opens one subscribed connection per channel, tells the parent, holds them until released. */
async function idle(job) {
  const meter = new Meter(job.pid, job.clkTck);
  meter.start();
  const conns = await openMany(job.channels.length, job.connectConcurrency ?? 256, (index) => {
    const auth = Array.isArray(job.auth) ? job.auth[index] : job.auth;
    return new Conn(job.port, Buffer.concat([authCommand(auth), command('SUBSCRIBE', job.channels[index])]), 2);
  });
  const setup = meter.stop();
  await new Promise((resolve) => {
    releaseWaiter = resolve;
    process.send({ type: 'ready', setupSeconds: setup.seconds });
  });
  const dropped = conns.filter((c) => c.closedByPeer).length;
  for (const conn of conns) conn.reset();
  return { ...setup, connections: conns.length, dropped };
}

// ---- connection storm (case 6) -------------------------------------------------------------

/**
 * Every client connects at once, authenticates and subscribes; time until the last is in. With
 * `holdUntilReleased`, the clients stay connected once in until the parent releases them.
 * `commands` (default `['AUTH', 'SUBSCRIBE']`) is what each client sends at once, each command
 * answered by one reply: `AUTH` (its token), `SUBSCRIBE` (its channel), `PING`, `RESET` (the one
 * a client may send before AUTH and be answered without an error), to tell apart what each part
 * of the storm costs the server.
 */
async function storm(job) {
  const count = job.channels.length;
  const steps = job.commands ?? ['AUTH', 'SUBSCRIBE'];
  const stepCommand = (step, index) => {
    if (step === 'AUTH') return authCommand(Array.isArray(job.auth) ? job.auth[index] : job.auth);
    if (step === 'SUBSCRIBE') return command('SUBSCRIBE', job.channels[index]);
    if (step === 'PING' || step === 'RESET') return command(step);
    throw new Error(`storm: unknown command ${step}`);
  };
  const hellos = job.channels.map((_channel, index) => Buffer.concat(steps.map((step) => stepCommand(step, index))));
  const meter = new Meter(job.pid, job.clkTck);
  let done = 0;
  let failed = 0;
  let firstError;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const conns = new Array(count);
  const doneAt = new Float64Array(count);
  const connectedAt = new Float64Array(count);
  meter.start();
  const t0 = performance.now();
  // Connects go out in slices with a turn in between, so the generator answers the first
  // clients' handshakes while it still opens the others (one synchronous loop of 5,000
  // connects would hold every client back until the last connect() returned).
  for (let i = 0; i < count; i++) {
    if (i > 0 && i % 100 === 0) await new Promise((r) => setImmediate(r));
    const conn = new Conn(job.port, hellos[i], steps.length);
    conns[i] = conn;
    conn.socket.once('connect', () => {
      connectedAt[i] = performance.now() - t0;
    });
    conn.ready.then(
      () => {
        doneAt[done] = performance.now() - t0;
        if (++done + failed === count) finish();
      },
      (error) => {
        firstError ??= error.message;
        if (done + ++failed === count) finish();
      },
    );
  }
  const timeout = setTimeout(finish, job.timeoutMs);
  await finished;
  clearTimeout(timeout);
  const window = meter.stop();
  if (job.holdUntilReleased) {
    // The parent looks at the server between the storm and the clients' disconnection.
    await new Promise((resolve) => {
      releaseWaiter = resolve;
      process.send({ type: 'ready' });
    });
  }
  for (const conn of conns) conn.reset();
  // When each client was in: a step at 1 s (or 3 s) is the kernel dropping SYNs of a full
  // accept queue and the client retransmitting, not the server being slow.
  const sorted = doneAt.subarray(0, done).sort();
  const connects = connectedAt.sort();
  return {
    ...window,
    subscribed: done,
    failed,
    firstError,
    timedOut: done + failed < count,
    subscribedP50: percentile(sorted, 50) / 1000,
    subscribedP90: percentile(sorted, 90) / 1000,
    connectedP50: percentile(connects, 50) / 1000,
    connectedP90: percentile(connects, 90) / 1000,
    connectedMax: connects[connects.length - 1] / 1000,
    after1s: sorted.filter((t) => t > 1000).length,
  };
}

// ---- one pipelining client (store: publish throughput) ---------------------------------------

/**
 * One connection sending `total` commands, `depth` outstanding at most, in pre-encoded batches:
 * cycling through `commands` one by one, or (`repeatEach`) each command that many times before
 * the next (filling one sandbox after the other). The rate is measured from `warmupFraction`
 * of the replies on.
 */
async function pipeline(job) {
  const conn = new Conn(job.port, authCommand(job.auth), 1);
  await conn.ready;
  conn.scanner.frames = 0;
  const batchSize = job.batch;
  const batches = [];
  const all = job.commands.map((args) => command(...args));
  if (job.repeatEach) {
    if (job.repeatEach % batchSize !== 0) throw new Error('repeatEach must be a multiple of batch');
    const perCommand = job.repeatEach / batchSize;
    for (const one of all) {
      const batch = Buffer.concat(Array.from({ length: batchSize }, () => one));
      for (let i = 0; i < perCommand; i++) batches.push(batch);
    }
  } else {
    for (let start = 0; start < all.length; start += batchSize)
      batches.push(Buffer.concat(all.slice(start, start + batchSize)));
  }
  const perBatch = batches.map((_batch) => (job.repeatEach ? batchSize : undefined));
  if (!job.repeatEach) {
    for (let i = 0; i < batches.length; i++) perBatch[i] = Math.min(batchSize, all.length - i * batchSize);
  }
  let sent = 0;
  let b = 0;
  const meter = new Meter(job.pid, job.clkTck);
  const warmAt = Math.floor(job.total * job.warmupFraction);
  let measured = false;
  let window;
  await new Promise((resolve, reject) => {
    const fill = () => {
      while (sent < job.total && sent - conn.scanner.frames + perBatch[b] <= job.depth) {
        conn.write(batches[b]);
        sent += perBatch[b];
        b = (b + 1) % batches.length;
      }
    };
    conn.onInput = () => {
      const got = conn.scanner.frames;
      if (conn.scanner.errors > 0) reject(new Error(conn.scanner.firstError));
      if (!measured && got >= warmAt) {
        measured = true;
        meter.start();
        meter.startCount = got;
      }
      if (got >= job.total) {
        window = meter.stop();
        window.count = got - meter.startCount;
        resolve();
      } else fill();
    };
    conn.socket.on('close', () => reject(new Error('connection closed by the server')));
    fill();
  });
  conn.reset();
  return { ...window, rate: window.count / window.seconds };
}

// ---- request/response latency (store: history) --------------------------------------------

/** One connection, one request at a time, picking `commands` at random; latency per reply. */
async function query(job) {
  const conn = new Conn(job.port, authCommand(job.auth), 1);
  await conn.ready;
  const encoded = job.commands.map((args) => command(...args));
  let seed = 12345;
  const random = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const times = new Float64Array(job.count);
  const meter = new Meter(job.pid, job.clkTck);
  let waiting;
  conn.socket.on('close', () => waiting?.reject(new Error('connection closed by the server')));
  for (let i = -job.warmup; i < job.count; i++) {
    if (i === 0) meter.start();
    const expected = conn.scanner.frames + 1;
    const t0 = performance.now();
    await new Promise((resolve, reject) => {
      waiting = { reject };
      conn.onInput = () => {
        if (conn.scanner.frames >= expected) resolve();
      };
      conn.write(encoded[Math.floor(random() * encoded.length)]);
    });
    if (i >= 0) times[i] = performance.now() - t0;
  }
  const window = meter.stop();
  const errors = conn.scanner.errors;
  conn.reset();
  times.sort();
  return {
    ...window,
    p50: percentile(times, 50),
    p99: percentile(times, 99),
    max: times[times.length - 1],
    errors,
    firstError: conn.scanner.firstError,
  };
}
