/**
 * S3's XML, both ways. Answers are built here (elements only, no attributes but the
 * namespace), request bodies (CompleteMultipartUpload, Delete, CreateBucketConfiguration,
 * VersioningConfiguration, LifecycleConfiguration) parsed by fast-xml-parser after its
 * validator, with entities off: a body is data, never expanded. A body that does not
 * parse, or lacks what the operation needs, is S3's `MalformedXML`.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { S3Error } from './s3-errors.ts';

export const S3_NS = 'http://s3.amazonaws.com/doc/2006-03-01/';

export type XmlValue = string | number | boolean | undefined | null | XmlObject | XmlValue[];
export interface XmlObject {
  [element: string]: XmlValue;
}

const SPECIAL = /[&<>"']/;

export function escapeXml(s: string): string {
  // Most keys, ETags and times hold nothing to escape: the test is cheaper than the replace.
  if (!SPECIAL.test(s)) return s;
  return s.replace(/[&<>"']/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '"' ? '&quot;' : '&apos;'));
}

/** `value` as elements named `name` (a list: one each), appended to `out`. Strings are built by `+=`: a listing page is ~6000 elements. */
function element(name: string, value: XmlValue, out: string): string {
  if (value === undefined || value === null) return out;
  if (Array.isArray(value)) {
    for (const v of value) out = element(name, v, out);
    return out;
  }
  if (typeof value === 'object') {
    out += `<${name}>`;
    for (const k in value) out = element(k, value[k], out);
    return `${out}</${name}>`;
  }
  return `${out}<${name}>${typeof value === 'string' ? escapeXml(value) : String(value)}</${name}>`;
}

/** An XML document with one root element; `ns`: with S3's namespace (errors have none). */
export function xmlDoc(root: string, body: XmlObject, ns = true): string {
  let out = `<?xml version="1.0" encoding="UTF-8"?>\n${ns ? `<${root} xmlns="${S3_NS}">` : `<${root}>`}`;
  for (const k in body) out = element(k, body[k], out);
  return `${out}</${root}>`;
}

const parser = new XMLParser({
  ignoreAttributes: true,
  removeNSPrefix: true,
  parseTagValue: false,
  processEntities: true,
  htmlEntities: false,
  trimValues: true,
  ignoreDeclaration: true,
});

/** The root element's content of an XML request body; MalformedXML unless it is `root`. */
export function parseXmlBody(body: Buffer, root: string): Record<string, unknown> {
  const text = body.toString('utf8');
  if (text.trim() === '' || XMLValidator.validate(text) !== true) throw new S3Error('MalformedXML', 'The XML you provided was not well-formed');
  // Entities: only the five predefined ones are expanded (no DTD is accepted).
  if (/<!DOCTYPE|<!ENTITY/i.test(text)) throw new S3Error('MalformedXML', 'DTDs are not accepted');
  const doc = parser.parse(text) as Record<string, unknown>;
  const content = doc[root];
  if (content === undefined) throw new S3Error('MalformedXML', `expected a ${root} document`);
  return typeof content === 'object' && content !== null ? (content as Record<string, unknown>) : {};
}

/** A child that may appear once or repeated, always as a list. */
export function xmlList(v: unknown): unknown[] {
  if (v === undefined || v === null || v === '') return [];
  return Array.isArray(v) ? v : [v];
}

export function xmlText(v: unknown): string | undefined {
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined;
}
