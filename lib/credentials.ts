// Per-namespace credentials: what a coffer's host gives a coffer instead of the node's token. A credential
// is bound to one namespace key (and a capacity quota) by an HMAC keyed with the node's token, so the
// node can check it without any state, and a tenant that reads its own credential can open its own
// namespace with it and nothing else. Pure: used by the host and by the memory node.
import { createHmac, timingSafeEqual } from 'node:crypto';

const PREFIX = 'farmem-ns1.';

export interface NamespaceCredential {
  /** Pages the namespace may reserve on a node; 0: no quota beyond the node's capacity. */
  quotaPages: number;
}

function mac(nodeToken: string, namespaceKey: Uint8Array, quotaPages: number): string {
  return createHmac('sha256', nodeToken).update('farmem namespace credential v1\0').update(namespaceKey).update(`\0${quotaPages}`).digest('hex');
}

/** The credential for `namespaceKey` on nodes started with `nodeToken`. */
export function deriveCredential(nodeToken: string, namespaceKey: Uint8Array, quotaPages = 0): string {
  return `${PREFIX}${quotaPages}.${mac(nodeToken, namespaceKey, quotaPages)}`;
}

/**
 * What `presented` grants for `namespaceKey` on a node whose token is `nodeToken`: null when it is not a
 * namespace credential at all (it may still be the node's token itself), 'forged' when it is one that
 * does not verify for this key, else its terms.
 */
export function checkCredential(nodeToken: string, namespaceKey: Uint8Array, presented: string): NamespaceCredential | 'forged' | null {
  if (!presented.startsWith(PREFIX)) return null;
  const [quotaText, given] = presented.slice(PREFIX.length).split('.');
  const quotaPages = Number(quotaText);
  if (!/^\d{1,15}$/.test(quotaText ?? '') || given === undefined || !/^[0-9a-f]{64}$/.test(given)) return 'forged';
  const expected = Buffer.from(mac(nodeToken, namespaceKey, quotaPages), 'hex');
  return timingSafeEqual(expected, Buffer.from(given, 'hex')) ? { quotaPages } : 'forged';
}
