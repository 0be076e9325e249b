// Frees a client's whole namespace on a memory node from outside that client: HELLO with its key, then
// BYE. The coffer host uses it when a coffer ends without saying goodbye itself (killed, out of memory),
// so its pages are freed at once rather than after the node's orphan timeout. Runs on the caller's thread.
import * as net from 'node:net';
import { FrameReader, FrameType, decodeError, decodeHelloOk, encodeBye, encodeHello } from '../protocol';
import type { NodeAddress } from './transport';

export interface ReleaseResult {
  node: string;
  /** The namespace existed and is now freed. */
  released: boolean;
  /** Why nothing was released, when nothing was. */
  reason?: string;
}

export function releaseNamespace(address: NodeAddress, token: string, namespaceKey: Uint8Array, timeoutMs: number): Promise<ReleaseResult> {
  const node = `${address.host}:${address.port}`;
  return new Promise((resolve) => {
    const reader = new FrameReader();
    let settled = false;
    const socket = net.connect({ host: address.host, port: address.port });
    const finish = (released: boolean, reason?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(reason === undefined ? { node, released } : { node, released, reason });
    };
    const timer = setTimeout(() => finish(false, `no answer within ${timeoutMs} ms`), timeoutMs);
    let resumed = false;
    socket.on('connect', () => socket.write(encodeHello(1, namespaceKey, token)));
    socket.on('error', (error) => finish(false, error.message));
    socket.on('close', () => finish(false, 'the node closed the connection'));
    socket.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      try {
        for (let frame = reader.next(); frame !== null; frame = reader.next()) {
          const type = frame.header.type;
          if (type === FrameType.Error) return finish(false, decodeError(frame.frame).message);
          if (type === FrameType.HelloOk) {
            resumed = decodeHelloOk(frame.frame).resumed;
            // A namespace that did not exist was just created empty: BYE removes it again either way.
            socket.write(encodeBye(2));
          } else if (type === FrameType.ByeOk) {
            return finish(resumed, resumed ? undefined : 'the node held nothing for this namespace');
          }
        }
      } catch (error) {
        finish(false, (error as Error).message);
      }
    });
  });
}
