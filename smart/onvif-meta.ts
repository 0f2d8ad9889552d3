/**
 * What a smart-stream packet says, in the few words search needs: object classes,
 * rule names, event topics, how many objects, and the camera's own time for it.
 *
 * ONVIF metadata (tt:MetadataStream, ONVIF Streaming spec) is parsed with a real XML
 * parser (fast-xml-parser, validated first, entities off); namespace prefixes vary by
 * vendor (tt:, onvif:, none), so they are dropped and elements are matched by local
 * name: Frame/@UtcTime, Frame/Object (counted), Object/…/Class/Type and the ONVIF 1.x
 * Class/ClassCandidate/Type, NotificationMessage/Topic, and SimpleItem Name="Rule" or
 * "RuleName" (its Value). KLV (SMPTE 336, e.g. MISB ST 0601) is recognised by its
 * 16-byte universal key and indexed by that key as topic `klv:<hex>`.
 *
 * Bad content throws SmartPacketError; callers count and skip it.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { RecorderError } from '../lib/errors.ts';
import type { SmartKind } from './smart-frame.ts';

/** Caps so one hostile packet cannot bloat the index. */
const MAX_TERMS = 32;
const MAX_TERM_CHARS = 128;
/** A metadata document larger than this is not parsed (flood or garbage). */
export const MAX_XML_BYTES = 256 * 1024;

export interface SmartContent {
  classes: string[];
  rules: string[];
  topics: string[];
  objects: number;
  /** The time the packet states for itself (Frame/@UtcTime), epoch ms. */
  contentMs?: number;
}

export type SmartPacketProblem = 'malformedXml' | 'malformedKlv' | 'unknownPayload';

export class SmartPacketError extends RecorderError {
  constructor(
    readonly problem: SmartPacketProblem,
    message: string,
  ) {
    super('SMART_PACKET_INVALID', message);
    this.name = 'SmartPacketError';
  }
}

const KLV_UL_PREFIX = Buffer.from([0x06, 0x0e, 0x2b, 0x34]);

/** Decides what a data packet is from its bytes (and the PMT's registration, if any). */
export function classifyPayload(payload: Buffer, registration?: string): SmartKind | null {
  if (payload.length >= 16 && payload.subarray(0, 4).equals(KLV_UL_PREFIX)) return 'klv';
  if (registration === 'KLVA') return 'klv';
  let i = 0;
  if (payload[0] === 0xef && payload[1] === 0xbb && payload[2] === 0xbf) i = 3; // UTF-8 BOM
  while (i < payload.length && (payload[i] === 0x20 || payload[i] === 0x0a || payload[i] === 0x0d || payload[i] === 0x09)) i++;
  if (payload[i] === 0x3c) return 'onvif'; // '<'
  return null;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  removeNSPrefix: true,
  parseTagValue: false,
  parseAttributeValue: false,
  processEntities: false,
  htmlEntities: false,
  trimValues: true,
});

type Node = Record<string, unknown>;

class Terms {
  private readonly set = new Set<string>();
  add(v: unknown): void {
    if (typeof v !== 'string') return;
    const s = v.trim().slice(0, MAX_TERM_CHARS);
    if (s !== '' && this.set.size < MAX_TERMS) this.set.add(s);
  }
  list(): string[] {
    return [...this.set];
  }
}

function text(node: unknown): unknown {
  if (typeof node === 'string') return node;
  if (node && typeof node === 'object' && !Array.isArray(node)) return (node as Node)['#text'];
  return undefined;
}

/** Parses one ONVIF metadata document. */
export function parseOnvifMetadata(payload: Buffer): SmartContent {
  if (payload.length > MAX_XML_BYTES) throw new SmartPacketError('malformedXml', `metadata document of ${payload.length} bytes is over ${MAX_XML_BYTES}`);
  const xml = payload.toString('utf8');
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new SmartPacketError('malformedXml', `malformed XML: ${valid.err.msg} (line ${valid.err.line})`);
  let doc: Node;
  try {
    doc = parser.parse(xml) as Node;
  } catch (err) {
    throw new SmartPacketError('malformedXml', `malformed XML: ${(err as Error).message}`);
  }
  const root = Object.keys(doc).find((k) => !k.startsWith('?') && !k.startsWith('@_') && k !== '#text');
  if (root !== 'MetadataStream') throw new SmartPacketError('unknownPayload', `XML root ${root ?? '(none)'} is not tt:MetadataStream`);
  const classes = new Terms();
  const rules = new Terms();
  const topics = new Terms();
  let objects = 0;
  let contentMs: number | undefined;
  const walk = (node: unknown, name: string, parent: string, depth: number): void => {
    if (depth > 64) return; // nesting this deep is not metadata
    if (Array.isArray(node)) {
      for (const n of node) walk(n, name, parent, depth);
      return;
    }
    if (name === 'Type' && (parent === 'Class' || parent === 'ClassCandidate')) classes.add(text(node));
    if (name === 'Topic') topics.add(text(node));
    if (!node || typeof node !== 'object') return;
    const n = node as Node;
    if (name === 'Object' && parent === 'Frame') objects++;
    if (name === 'Frame' && contentMs === undefined && typeof n['@_UtcTime'] === 'string') {
      const ms = Date.parse(n['@_UtcTime']);
      if (Number.isFinite(ms)) contentMs = ms;
    }
    if (name === 'SimpleItem' && (n['@_Name'] === 'Rule' || n['@_Name'] === 'RuleName')) rules.add(n['@_Value']);
    for (const [k, v] of Object.entries(n)) if (!k.startsWith('@_') && k !== '#text') walk(v, k, name, depth + 1);
  };
  walk(doc[root], root, '', 0);
  return { classes: classes.list(), rules: rules.list(), topics: topics.list(), objects, ...(contentMs !== undefined ? { contentMs } : {}) };
}

/** Checks one KLV triplet's framing and names it by its universal key. */
export function parseKlv(payload: Buffer): SmartContent {
  if (payload.length < 17) throw new SmartPacketError('malformedKlv', `KLV packet of ${payload.length} bytes`);
  let at = 16;
  let len = payload[at]!;
  at++;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || at + n > payload.length) throw new SmartPacketError('malformedKlv', 'bad KLV BER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + payload[at + i]!;
    at += n;
  }
  if (at + len > payload.length) throw new SmartPacketError('malformedKlv', `KLV value of ${len} bytes, ${payload.length - at} present`);
  const key = payload.subarray(0, 16);
  const contentMs = key.equals(MISB_0601_KEY) ? misbTimestampMs(payload.subarray(at, at + len)) : undefined;
  return { classes: [], rules: [], topics: [`klv:${key.toString('hex')}`], objects: 0, ...(contentMs !== undefined ? { contentMs } : {}) };
}

/** MISB ST 0601 (UAS Datalink Local Set) universal key. */
const MISB_0601_KEY = Buffer.from('060e2b34020b01010e01030101000000', 'hex');

/** Tag 2 of a MISB ST 0601 local set: precision time stamp, UNIX microseconds (8 bytes). */
function misbTimestampMs(set: Buffer): number | undefined {
  for (let i = 0; i + 2 <= set.length;) {
    const tag = set[i]!;
    const len = set[i + 1]!;
    if (tag & 0x80 || len & 0x80) return undefined; // long tags/lengths: not the timestamp we look for
    if (tag === 2 && len === 8 && i + 10 <= set.length) return Math.round(Number(set.readBigUInt64BE(i + 2)) / 1000);
    i += 2 + len;
  }
  return undefined;
}

export function parseSmartPayload(kind: SmartKind, payload: Buffer): SmartContent {
  if (kind === 'onvif') return parseOnvifMetadata(payload);
  if (kind === 'klv') return parseKlv(payload);
  return { classes: [], rules: [], topics: [], objects: 0 };
}
