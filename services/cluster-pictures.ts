/**
 * Picture operations over every node of a cluster (docs/pictures.md "In a cluster"): a
 * picture is stored on the node that received it, so a search, a search by image and a
 * batch lock ask each node that stores pictures of the cameras named (all nodes heard of
 * when none is named) on its own subject and merge what they answer.
 *
 * What travels: the search's query; for search by image the query picture's 20-byte
 * signature, computed once here (never the picture); for a batch lock its body. A node
 * that does not answer makes a search `partial` with its id in `unreachable`; a batch
 * lock too, once the nodes that did answer have locked theirs. A node that refuses a
 * lock (its pool's lock share) fails the request with its code, naming that node and
 * how many pictures the others locked: a lock is never reported done where it was not.
 */
import { randomUUID } from 'node:crypto';
import type { CameraPlacement } from '../cluster/cluster.ts';
import { RecorderError } from '../lib/errors.ts';
import { parsePictureId } from '../pictures/layout.ts';
import { zipLimit, zipOf, zipTooLarge, type PictureService, type PictureView, type PictureZip, type SimilarMatch, type ZipEntry } from './picture-service.ts';
import { CLUSTER_TOKEN_HEADER } from '../cluster/copies.ts';
import { specKey } from '../pictures/preview.ts';

/** What peers are asked, on `<prefix>.v1.node.<id>.<subject>` (node.ts serves them). */
export const PEER_PICTURE_SUBJECTS = {
  has: 'picture',
  search: 'pictures.search',
  similar: 'pictures.similar',
  locks: 'pictures.locks',
  lockOne: 'pictures.lock-one',
  zip: 'pictures.zip-list',
} as const;

/**
 * What a peer answers for a batch download: its entries without their bytes (fetched
 * over HTTP as the ZIP is sent). Asked with `zipPage`, one page of them: `listing` names
 * the whole list it keeps for the next pages, `total` counts it. Asked without (an older
 * asker), all of them at once.
 */
export interface PeerZipListing {
  entries: Omit<ZipEntry, 'load'>[];
  listing?: string;
  total?: number;
}

/** Which page of a batch listing a peer is asked for: the first (no `listing`), or one of a listing it keeps. */
export interface ZipPage {
  listing?: string;
  offset: number;
}

/** What a peer receives for search by image: the query's filters and the signature (base64). */
export interface PeerSimilarRequest {
  query: Record<string, unknown>;
  signature: string;
}

/** What a peer receives to lock or unlock one picture it stores (`rec.v1.picture.lock` with an `id`). */
export interface PeerLockOneRequest {
  id: string;
  until?: string | number;
  unlock: boolean;
}

/** What a peer receives for a batch lock or unlock. */
export interface PeerLockRequest {
  body: unknown;
  unlock: boolean;
}

type Visible = (camera: string) => boolean;

/** How long a holder may take to list its part of a batch ZIP (its previews rendered to know their sizes). */
const ZIP_LISTING_TIMEOUT_MS = 60_000;
/** How long a holder keeps a listing for its next pages, and how many it keeps at most (more: refused, CLUSTER_UNAVAILABLE). */
const ZIP_LISTING_KEEP_MS = 120_000;
const ZIP_LISTINGS_KEPT = 16;
/** Entries a holder puts in one NATS reply of a listing unless told (~130 bytes each: far below the 1 MB payload). */
export const ZIP_PAGE_ENTRIES = 2000;
interface Partial {
  partial?: boolean;
  unreachable?: string[];
}

export class ClusterPictures {
  /** Listings this node answered a first page of, kept for the next pages (`answerZipList`). */
  private readonly listings = new Map<string, { entries: Omit<ZipEntry, 'load'>[]; until: number }>();

  constructor(
    private readonly pictures: PictureService,
    private readonly cluster: () => CameraPlacement | null,
    /** The token peers show each other over HTTP (cluster/copies.ts); null outside a cluster. */
    private readonly token: () => string | null = () => null,
  ) {}

  /**
   * The batch download over every node storing pictures of the cameras: each lists its
   * entries (and renders its previews, to know their sizes) on `pictures.zip-list`; the
   * ZIP is built here in time order with an exact length, and another node's bytes are
   * fetched from it over HTTP (`/api/cluster/pictures/:id`, the cluster token) when the
   * stream reaches them. A node that does not answer the listing fails the request
   * (CLUSTER_UNAVAILABLE): a ZIP cannot say it is partial, and a silent hole is what a
   * user must never get. One that fails while its bytes are sent ends the stream short
   * of its Content-Length (the client sees a broken download, and resumes with Range).
   */
  async zip(query: Record<string, unknown>, visible: Visible): Promise<PictureZip> {
    const local = await this.pictures.zipEntries(query, visible);
    const variant = local.spec ? specKey(local.spec) : 'original';
    // A holder renders its previews to list their sizes (up to 2000): far longer than a plain peer request's 2 s.
    const asked = await this.askPeers<PeerZipListing>(
      namedCameras(query.camera),
      PEER_PICTURE_SUBJECTS.zip,
      { ...query, zipPage: { offset: 0 } satisfies ZipPage },
      undefined,
      ZIP_LISTING_TIMEOUT_MS,
    );
    // Every node judged dead is named in the answer (the route's X-Recorder-Nodes-Down):
    // whether it stored pictures of the range is what this node's holders catalog says,
    // and a catalog can lag; naming a dead node too many is better than a silent hole.
    // Read after the asking: a node that just died may be judged so meanwhile.
    const deadNow = (): Set<string> => new Set((this.cluster()?.nodes() ?? []).filter((n) => !n.alive).map((n) => n.node));
    const withDown = (zip: PictureZip, dead: Set<string>): PictureZip => (dead.size > 0 ? { ...zip, fromCopiesOf: [...dead].sort() } : zip);
    if (!asked) return withDown(await zipOf(local.entries, variant), deadNow());
    // A holder's listing comes a page per reply (NATS payloads are bounded): the rest now.
    await Promise.all(asked.answers.map((answer, i) => this.restOfListing(asked.nodes[i]!, answer)));
    // A node judged dead whose pictures are all in pools with copies is left out: its
    // pictures are listed by the nodes holding their copies (those it stored in the last
    // second before it died, not pulled yet, are missing until it is back).
    const copied = this.pictures.fewestCopies(namedCameras(query.camera)) > 1;
    const dead = deadNow();
    const missing = asked.unreachable.filter((n) => !(copied && dead.has(n)));
    if (missing.length > 0) {
      throw new RecorderError(
        'CLUSTER_UNAVAILABLE',
        `node ${missing.join(', ')}, which stores pictures of the range, did not answer: the ZIP would miss them`,
        {
          details: { unreachable: missing },
        },
      );
    }
    const preview = previewQuery(query);
    const entries = [...local.entries];
    // A picture held by several nodes (a pool's copies) is one entry: this node's, else the first node's by id.
    const seen = new Set(entries.map((e) => e.id));
    for (const [i, answer] of asked.answers.entries()) {
      const node = asked.nodes[i]!;
      for (const e of answer.entries) {
        if (!visible(e.camera) || seen.has(e.id)) continue;
        seen.add(e.id);
        entries.push({ ...e, load: () => this.fetchPicture(node, e.id, preview) });
      }
    }
    if (entries.length > zipLimit(local.spec !== null)) throw zipTooLarge(local.spec !== null);
    return withDown(await zipOf(entries, variant), dead);
  }

  /** Appends to `first` (a holder's first page) the pages after it; CLUSTER_UNAVAILABLE when one does not come. */
  private async restOfListing(node: string, first: PeerZipListing): Promise<void> {
    const cluster = this.cluster();
    const total = first.total ?? first.entries.length;
    while (first.entries.length < total) {
      if (!cluster || first.listing === undefined) throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${node} listed part of the batch only`);
      const page: ZipPage = { listing: first.listing, offset: first.entries.length };
      let next: PeerZipListing;
      try {
        next = await cluster.ask<PeerZipListing>(node, PEER_PICTURE_SUBJECTS.zip, { zipPage: page }, ZIP_LISTING_TIMEOUT_MS);
      } catch (err) {
        throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${node} did not answer page ${page.offset} of its batch listing: the ZIP would miss pictures`, {
          cause: err,
          details: { unreachable: [node] },
        });
      }
      if (next.entries.length === 0) throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${node} answered an empty page ${page.offset} of ${total}`);
      first.entries.push(...next.entries);
    }
  }

  /**
   * This node's part of another node's batch download (`pictures.zip-list`): with
   * `zipPage`, `pageEntries` of its entries from the page's offset, the whole list kept
   * under a listing id for the next pages (ZIP_LISTING_KEEP_MS; dropped once its last
   * page is sent); without, every entry at once (an asker of an older version).
   */
  async answerZipList(body: Record<string, unknown>, pageEntries = ZIP_PAGE_ENTRIES): Promise<PeerZipListing> {
    const { zipPage, ...query } = body;
    const page = zipPageOf(zipPage);
    const whole = async (): Promise<Omit<ZipEntry, 'load'>[]> => (await this.pictures.zipEntries(query, () => true)).entries.map(({ load: _load, ...e }) => e);
    if (!page) return { entries: await whole() };
    const nowMs = Date.now();
    for (const [id, l] of this.listings) if (l.until < nowMs) this.listings.delete(id);
    let id = page.listing;
    let listing = id === undefined ? undefined : this.listings.get(id);
    if (id !== undefined && !listing) throw new RecorderError('CLUSTER_UNAVAILABLE', `batch listing ${id} is no longer kept here: ask for the ZIP again`);
    if (!listing) {
      id = randomUUID();
      listing = { entries: await whole(), until: nowMs + ZIP_LISTING_KEEP_MS };
      this.listings.set(id, listing);
      // Never one still being paged: a listing goes when its last page is sent or it expires.
      if (this.listings.size > ZIP_LISTINGS_KEPT) {
        this.listings.delete(id);
        throw new RecorderError('CLUSTER_UNAVAILABLE', `busy: this node lists ${ZIP_LISTINGS_KEPT} batch downloads already: try again in a minute`);
      }
    }
    const entries = listing.entries.slice(page.offset, page.offset + Math.max(1, pageEntries));
    if (page.offset + entries.length >= listing.entries.length) this.listings.delete(id!);
    return { entries, listing: id!, total: listing.entries.length };
  }

  /** A picture's bytes (original, or the preview of `preview`) from the node that stores it. */
  private async fetchPicture(node: string, id: string, preview: string): Promise<Buffer> {
    const http = this.cluster()?.peerHttp(node);
    const token = this.token();
    if (!http || token === null) throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${node} is not reachable over HTTP`);
    const res = await fetch(`${http}/api/cluster/pictures/${encodeURIComponent(id)}${preview}`, { headers: { [CLUSTER_TOKEN_HEADER]: token } });
    if (!res.ok) throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${node} answered ${res.status} for picture ${id}`);
    return Buffer.from(await res.arrayBuffer());
  }

  /** Merged in time order (then seq, then camera): one page of `limit`, `next` as on one node. */
  async search(query: Record<string, unknown>, visible: Visible): Promise<{ pictures: PictureView[]; next: string | null } & Partial> {
    const local = this.pictures.search(query, visible);
    const asked = await this.askPeers<{ pictures: PictureView[]; next: string | null }>(namedCameras(query.camera), PEER_PICTURE_SUBJECTS.search, query);
    if (!asked) return local;
    const limit = Number(query.limit ?? 100) || 100;
    const all = [local, ...asked.answers];
    const order = (a: PictureView, b: PictureView): number =>
      Date.parse(a.at) - Date.parse(b.at) || a.seq - b.seq || (a.camera < b.camera ? -1 : a.camera > b.camera ? 1 : 0);
    const merged = uniqueById(
      all
        .flatMap((p) => p.pictures)
        .filter((p) => visible(p.camera))
        .sort(order),
    );
    const page = merged.slice(0, limit);
    const more = merged.length > limit || all.some((p) => p.next !== null);
    return { pictures: page, next: more && page.length > 0 ? page[page.length - 1]!.id : null, ...partialOf(asked.unreachable) };
  }

  /** The `limit` best matches of every node, best first (equal scores: by id, so every node asked answers alike). */
  async similar(query: Record<string, unknown>, body: unknown, visible: Visible): Promise<{ matches: SimilarMatch[] } & Partial> {
    const sig = await this.pictures.querySignature(body);
    const local = this.pictures.similarTo(query, sig, visible);
    const request: PeerSimilarRequest = { query, signature: sig.toString('base64') };
    const asked = await this.askPeers<{ matches: SimilarMatch[] }>(namedCameras(query.camera), PEER_PICTURE_SUBJECTS.similar, request);
    if (!asked) return local;
    const limit = Number(query.limit ?? 10) || 10;
    const matches = uniqueById(
      [local, ...asked.answers]
        .flatMap((a) => a.matches)
        .filter((m) => visible(m.camera))
        .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
    ).slice(0, limit);
    return { matches, ...partialOf(asked.unreachable) };
  }

  /** Locks (or unlocks) the pictures of the cameras over the range on every node that stores some; the count over all. */
  async lockBatch(body: unknown, visible: Visible, unlock: boolean): Promise<{ pictures: number } & Partial> {
    // Here first: it validates the body and checks the caller may see every camera before any peer is asked.
    const local = await this.pictures.lockBatch(body, visible, unlock);
    const cameras = this.pictures.lockBatchCameras(body);
    const request: PeerLockRequest = { body, unlock };
    const refused: { node: string; error: RecorderError }[] = [];
    const asked = await this.askPeers<{ pictures: number }>(cameras, PEER_PICTURE_SUBJECTS.locks, request, (node, error) => refused.push({ node, error }));
    if (!asked) return local;
    const pictures = asked.answers.reduce((n, a) => n + a.pictures, local.pictures);
    if (refused.length > 0) {
      const first = refused[0]!;
      throw new RecorderError(
        first.error.code,
        `${first.error.message} (${pictures} pictures were ${unlock ? 'unlocked' : 'locked'} on the nodes that accepted)`,
        {
          details: {
            done: pictures,
            refused: refused.map((r) => ({ node: r.node, code: r.error.code, message: r.error.message })),
            unreachable: asked.unreachable,
          },
        },
      );
    }
    return { pictures, ...partialOf(asked.unreachable) };
  }

  /**
   * In a cluster: the node that stores picture `id` when this one does not (asked on each
   * holder of its camera's `picture` subject), or null: here, or nowhere.
   */
  async holderOf(id: string): Promise<string | null> {
    const cluster = this.cluster();
    const camera = parsePictureId(id)?.[0];
    if (!cluster || camera === undefined || this.pictures.has(id)) return null;
    for (const node of cluster.holders(camera)) {
      if (node === cluster.nodeId) continue;
      const r = await cluster.ask<{ has: boolean }>(node, PEER_PICTURE_SUBJECTS.has, { id }).catch(() => null);
      if (r?.has) return node;
    }
    return null;
  }

  /**
   * Locks or unlocks one picture by id on every node that holds it (its writer and the
   * copies of a pool with `copies` > 1): here first when it is here, then each other
   * holder of its camera (`pictures.lock-one`, which locks there only). A lock
   * acknowledged is on every holder that answered, so cover keeps every copy it reached.
   * A holder that refuses (its lock share) fails the request with its code, naming what
   * was locked elsewhere (locks are not atomic across nodes); one that does not answer is
   * named in `unreachable` with `partial: true`. PICTURE_NOT_FOUND when no node has it.
   */
  async lockOne(body: Record<string, unknown>, unlock: boolean): Promise<{ picture: PictureView } & Partial> {
    const id = String(body.id);
    const cluster = this.cluster();
    const camera = parsePictureId(id)?.[0];
    if (!cluster || camera === undefined) return this.pictures.lockJson(body, unlock) as Promise<{ picture: PictureView }>;
    const local = this.pictures.has(id) ? ((await this.pictures.lockJson(body, unlock)) as { picture: PictureView }) : null;
    const { id: _id, ...rest } = body;
    const request: PeerLockOneRequest = { id, ...(rest.until !== undefined ? { until: rest.until as string | number } : {}), unlock };
    // Every live node besides the camera's holders: a copy holder joins the holders catalog
    // only once its first range is indexed, and one whose copy is in flight must note the
    // lock then (a node without the picture answers PICTURE_NOT_FOUND, nothing more).
    const peers = [
      ...new Set([
        ...cluster.holders(camera),
        ...cluster
          .nodes()
          .filter((n) => n.alive)
          .map((n) => n.node),
      ]),
    ].filter((n) => n !== cluster.nodeId);
    const unreachable: string[] = [];
    const refused: { node: string; error: RecorderError }[] = [];
    const answers = await Promise.all(
      peers.map((node) =>
        cluster.ask<{ picture: PictureView }>(node, PEER_PICTURE_SUBJECTS.lockOne, request).catch((err: unknown) => {
          // Not stored there: nothing to lock. Any other of our codes is a refusal; the rest, silence.
          if (err instanceof RecorderError && err.code === 'PICTURE_NOT_FOUND') return null;
          if (err instanceof RecorderError && err.code !== 'INTERNAL') refused.push({ node, error: err });
          else unreachable.push(node);
          return null;
        }),
      ),
    );
    const held = answers.filter((a): a is { picture: PictureView } => a !== null);
    const done = held.length + (local ? 1 : 0);
    if (refused.length > 0) {
      const first = refused[0]!;
      throw new RecorderError(first.error.code, `node ${first.node}: ${first.error.message} (${done} other copies were ${unlock ? 'unlocked' : 'locked'})`, {
        details: { done, refused: refused.map((r) => ({ node: r.node, code: r.error.code, message: r.error.message })), unreachable: unreachable.sort() },
      });
    }
    const picture = local?.picture ?? held[0]?.picture;
    if (!picture) {
      if (unreachable.length > 0) {
        throw new RecorderError('CLUSTER_UNAVAILABLE', `picture ${id} is not here and node ${unreachable.join(', ')} did not answer`, {
          details: { unreachable },
        });
      }
      throw new RecorderError('PICTURE_NOT_FOUND', `no picture ${id}`);
    }
    return { picture, ...partialOf(unreachable.sort()) };
  }

  /**
   * Asks each other node storing pictures of `cameras` (every node heard of when none is
   * named); null outside a cluster or with no other node. A node that refused (answered
   * one of our codes but INTERNAL) goes to `onRefused` when given, else counts as not
   * answering.
   */
  private async askPeers<T>(
    cameras: string[],
    subject: string,
    body: unknown,
    onRefused?: (node: string, error: RecorderError) => void,
    timeoutMs?: number,
  ): Promise<{ answers: T[]; nodes: string[]; unreachable: string[] } | null> {
    const cluster = this.cluster();
    if (!cluster) return null;
    const nodes = new Set(cameras.length > 0 ? cameras.flatMap((c) => cluster.holders(c)) : cluster.nodes().map((n) => n.node));
    nodes.delete(cluster.nodeId);
    if (nodes.size === 0) return null;
    const unreachable: string[] = [];
    const asked = [...nodes].sort();
    const answers = await Promise.all(
      asked.map((node) =>
        cluster.ask<T>(node, subject, body, timeoutMs).catch((err: unknown) => {
          if (onRefused && err instanceof RecorderError && err.code !== 'INTERNAL') onRefused(node, err);
          else unreachable.push(node);
          return null;
        }),
      ),
    );
    // `answers[i]` is `nodes[i]`'s.
    const answered = asked.flatMap((node, i) => (answers[i] === null ? [] : [{ node, answer: answers[i] as T }]));
    return { answers: answered.map((a) => a.answer), nodes: answered.map((a) => a.node), unreachable: unreachable.sort() };
  }
}

/** A `zipPage` as a peer sent it, or null (none: the whole listing); VALIDATION_FAILED when malformed. */
function zipPageOf(raw: unknown): ZipPage | null {
  if (raw === undefined) return null;
  const bad = (): RecorderError => new RecorderError('VALIDATION_FAILED', 'zipPage must be {offset: a whole number ≥ 0, listing?: string}');
  if (typeof raw !== 'object' || raw === null) throw bad();
  const { offset, listing } = raw as { offset?: unknown; listing?: unknown };
  if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0 || (listing !== undefined && typeof listing !== 'string')) throw bad();
  return { offset, ...(listing !== undefined ? { listing } : {}) };
}

/** The cameras a query names (`camera=a,b` or repeated); [] when none. */
function namedCameras(camera: unknown): string[] {
  return [camera]
    .flat()
    .filter((c): c is string => typeof c === 'string')
    .flatMap((c) => c.split(','))
    .filter(Boolean);
}

/** The first of each id (a picture several nodes hold: a pool's copies); order kept. */
function uniqueById<T extends { id: string }>(list: readonly T[]): T[] {
  const seen = new Set<string>();
  return list.filter((p) => (seen.has(p.id) ? false : (seen.add(p.id), true)));
}

function partialOf(unreachable: string[]): Partial {
  return unreachable.length > 0 ? { partial: true, unreachable } : {};
}

/** The preview keys of a batch download's query as the query of a picture's URL ('' for originals). */
function previewQuery(query: Record<string, unknown>): string {
  const keys = ['scale', 'width', 'height', 'fit', 'maxBytes'] as const;
  const params = new URLSearchParams();
  for (const k of keys) {
    const v = query[k];
    if (typeof v === 'string' || typeof v === 'number') params.set(k, String(v));
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}
