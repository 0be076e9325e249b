// Records one region's faults to a trace file (format: trace-file.ts) for `farmem replay`.
// Runs on the pager thread. Records go into a chunk; full chunks are written asynchronously, in order,
// so a fault never waits for the disk.
import * as fs from 'node:fs';
import { FarmemError } from '../errors';
import { PAGE_SIZE } from '../protocol';
import {
  TRACE_FLAG_FIRST_TOUCH,
  TRACE_FLAG_PREFETCH_HIT,
  TRACE_FLAG_WRITE,
  TRACE_RECORD_BYTES,
  encodeTraceHeader,
  writeTraceRecord,
} from '../trace-file';

const CHUNK_RECORDS = 4096;

export class TraceRecorder {
  private chunk = Buffer.allocUnsafe(CHUNK_RECORDS * TRACE_RECORD_BYTES);
  private used = 0;
  private faults = 0;
  /** Writes of full chunks, chained so they land in order. */
  private writing: Promise<void> = Promise.resolve();
  private error: Error | null = null;
  private readonly started = performance.now();

  private constructor(
    readonly file: string,
    private readonly fd: number,
  ) {}

  static async open(file: string, info: { regionPages: number; policy: string; localBudgetPages: number }): Promise<TraceRecorder> {
    let fd: number;
    try {
      fd = await new Promise<number>((resolve, reject) => fs.open(file, 'w', 0o644, (e, f) => (e ? reject(e) : resolve(f))));
    } catch (error) {
      throw new FarmemError('FARMEM_TRACE_FAILED', `cannot create the trace file ${file}: ${(error as Error).message}`, { cause: error });
    }
    const recorder = new TraceRecorder(file, fd);
    const header = encodeTraceHeader({
      format: 'farmem-trace',
      version: 1,
      pageSize: PAGE_SIZE,
      regionPages: info.regionPages,
      policy: info.policy,
      localBudgetPages: info.localBudgetPages,
      startedAt: new Date().toISOString(),
    });
    recorder.enqueue(header);
    return recorder;
  }

  /** One fault; `now` is performance.now(). */
  record(now: number, page: number, write: boolean, prefetchHit: boolean, firstTouch = false): void {
    const flags = (write ? TRACE_FLAG_WRITE : 0) | (prefetchHit ? TRACE_FLAG_PREFETCH_HIT : 0) | (firstTouch ? TRACE_FLAG_FIRST_TOUCH : 0);
    writeTraceRecord(this.chunk, this.used, now - this.started, page, flags);
    this.used += TRACE_RECORD_BYTES;
    this.faults++;
    if (this.used === this.chunk.length) {
      this.enqueue(this.chunk);
      this.chunk = Buffer.allocUnsafe(CHUNK_RECORDS * TRACE_RECORD_BYTES);
      this.used = 0;
    }
  }

  /** Writes what is left and closes the file. */
  async stop(): Promise<{ file: string; faults: number }> {
    if (this.used > 0) this.enqueue(this.chunk.subarray(0, this.used));
    this.used = 0;
    await this.writing;
    await new Promise<void>((resolve) => fs.close(this.fd, () => resolve()));
    if (this.error) {
      throw new FarmemError('FARMEM_TRACE_FAILED', `writing the trace file ${this.file} failed: ${this.error.message}`, { cause: this.error });
    }
    return { file: this.file, faults: this.faults };
  }

  private enqueue(data: Buffer): void {
    this.writing = this.writing.then(async () => {
      if (this.error) return;
      let offset = 0;
      while (offset < data.length) {
        try {
          offset += await new Promise<number>((resolve, reject) =>
            fs.write(this.fd, data, offset, data.length - offset, null, (e, n) => (e ? reject(e) : resolve(n))),
          );
        } catch (error) {
          this.error = error as Error;
          return;
        }
      }
    });
  }
}
