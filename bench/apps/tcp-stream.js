'use strict';
// Loopback TCP streaming bandwidth between two Node processes: the ceiling for the far-memory scan,
// whose pages also arrive over a TCP socket on 127.0.0.1. No framing and no copies beyond what the
// socket does, so this is the best a page stream over loopback could do from Node.
// The receiver connects and reads into one preallocated buffer (net.connect's `onread`), as the pager's
// connections do. Reading with 'data' events instead allocates a fresh Buffer for every read, and on
// this host the pages of that memory often come new from the kernel: the stream then spends most of the
// receiving CPU in page faults and runs at 0.5 GB/s for minutes (docs/benchmark-log.md, 2026-12-05 night).
// Usage: node bench/apps/tcp-stream.js [--bytes 2GiB] [--trials 3] [--chunk 64KiB] [--pin auto|off]   (prints JSON)
// Internal: node bench/apps/tcp-stream.js --send <bytes> <chunk>   (the sender child: prints its port, sends to one client)
const { spawn } = require('node:child_process');
const net = require('node:net');
const { median } = require('../common');
const { cpuPlacement, onCpus, placeSelf } = require('../cpus');

const MiB = 1 << 20;
const GiB = 1 << 30;
/** The receiver's one buffer. Its size hardly matters here: 64 KiB, 512 KiB and 2 MiB read alike. */
const READ_BUFFER_BYTES = MiB;

/** Sender child: listens, then writes one preallocated buffer of `chunkBytes` to its one client until `bytes` are sent, waiting on 'drain'. */
function send(bytes, chunkBytes) {
  const chunk = Buffer.alloc(chunkBytes, 0xa5);
  const server = net.createServer((socket) => {
    server.close(); // one connection per trial
    let left = bytes;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunkBytes);
        left -= n;
        if (!socket.write(n === chunkBytes ? chunk : chunk.subarray(0, n))) {
          socket.once('drain', pump);
          return;
        }
      }
      socket.end();
    };
    socket.on('error', (error) => {
      console.error(`tcp-stream sender: ${error.message}`);
      process.exit(1);
    });
    pump();
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`));
}

/** One trial: GB/s from the first byte to the last byte at the receiver. */
function trial(bytes, chunkBytes, senderCpus) {
  return new Promise((resolve, reject) => {
    const [command, argv] = onCpus(senderCpus, process.execPath, [__filename, '--send', String(bytes), String(chunkBytes)]);
    const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0) reject(new Error(`tcp-stream: sender exited with ${code}`));
    });
    let portLine = '';
    const onPort = (text) => {
      portLine += text;
      if (!portLine.includes('\n')) return;
      child.stdout.off('data', onPort);
      let received = 0;
      let first = 0n;
      let last = 0n;
      const socket = net.connect({
        host: '127.0.0.1',
        port: Number(portLine.trim()),
        onread: {
          buffer: Buffer.allocUnsafeSlow(READ_BUFFER_BYTES),
          callback: (n) => {
            if (received === 0) first = process.hrtime.bigint();
            received += n;
            if (received >= bytes) last = process.hrtime.bigint();
          },
        },
      });
      socket.on('error', reject);
      socket.on('end', () => {
        if (received !== bytes) {
          reject(new Error(`tcp-stream: received ${received} of ${bytes} bytes`));
          return;
        }
        resolve(bytes / 1e9 / (Number(last - first) / 1e9));
      });
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onPort);
  });
}

/**
 * Median loopback TCP streaming rate over `trials` trials of `bytes` each:
 * { gbPerSec, trials, writeBytes, readBufferBytes }.
 * An untimed warm-up trial goes first: the first stream in a process runs well below the rest
 * (the receiver's code is still being compiled), as the far-memory scan's cold pass does. With
 * `senderCpus` the sender runs there (taskset), as the memory node does; the receiver is this process.
 */
async function loopbackStreamGBps({ bytes = 2 * GiB, trials = 3, warmupBytes = 256 * MiB, chunkBytes = 64 * 1024, senderCpus = null } = {}) {
  if (warmupBytes > 0) await trial(warmupBytes, chunkBytes, senderCpus);
  const rates = [];
  for (let t = 0; t < trials; t++) rates.push(await trial(bytes, chunkBytes, senderCpus));
  return { gbPerSec: median(rates), trials: rates, writeBytes: chunkBytes, readBufferBytes: READ_BUFFER_BYTES };
}

module.exports = { loopbackStreamGBps };

if (require.main === module) {
  const argv = process.argv.slice(2);
  if (argv[0] === '--send') {
    send(Number(argv[1]), Number(argv[2]));
  } else {
    const { parseArgs } = require('node:util');
    const { parseSize } = require('../../dist/cjs/index.js');
    const opts = parseArgs({ args: argv, options: { bytes: { type: 'string', default: '2GiB' }, trials: { type: 'string', default: '3' }, chunk: { type: 'string', default: '64KiB' }, pin: { type: 'string', default: 'auto' } }, strict: true }).values;
    // Placed as `farmem bench` places it: the sender where the memory node runs, the receiver with the applications.
    const cpus = cpuPlacement(opts.pin);
    loopbackStreamGBps({ bytes: parseSize(opts.bytes), trials: Number(opts.trials), chunkBytes: parseSize(opts.chunk), senderCpus: placeSelf(cpus) }).then(
      (result) => console.log(JSON.stringify({ bench: 'tcp-stream', bytes: parseSize(opts.bytes), cpus, ...result })),
      (error) => {
        console.error(error);
        process.exit(1);
      },
    );
  }
}
