/**
 * What the nodes of a cluster ask each other directly (docs/design/cluster.md "Any node
 * answers"): each node answers on subjects of its own, `<prefix>.v1.node.<id>.<what>`,
 * what node.ts registers (`search`, `segments`, `copies.keep`, the pictures' subjects …)
 * and `ping`, which peers request each tick (cluster/liveness.ts: "no responders" says
 * this node's connection is gone).
 *
 * An answer is `{ok: true, …answer}` or `{ok: false, error: {code, message}}`: a refusal
 * of one of our codes stays a typed RecorderError on the asking node, so a caller tells
 * it from a node that did not answer. An answer over the NATS payload limit cannot be
 * sent: the asker gets PAYLOAD_TOO_LARGE instead, and this process goes on.
 */
import { ErrorCode, JSONCodec, type NatsConnection } from 'nats';
import { isErrorCode, RecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';

/** A request a peer answers on this node's own subject (registered by node.ts). */
export type PeerHandler = (body: unknown) => unknown;

/** How long a peer request waits for its answer by default. */
export const PEER_TIMEOUT_MS = 2000;
/** A peer's ping subject (`<prefix>.v1.node.<id>.ping`, cluster/liveness.ts GONE_TICKS). */
const PING = 'ping';

const json = JSONCodec();

export class PeerRequests {
  private readonly handlers = new Map<string, PeerHandler>();
  private nc: NatsConnection | null = null;

  constructor(private readonly o: { prefix: string; nodeId: string; log: Logger }) {
    // Peers ping us each tick: while this node's connection lives, NATS has a responder here.
    this.handlers.set(PING, () => ({}));
  }

  /** Registers what this node answers on `<prefix>.v1.node.<id>.<what>` (subscribed by `listen`). */
  serve(what: string, handler: PeerHandler): void {
    this.handlers.set(what, handler);
  }

  /** Answers every registered subject on `nc` from now on; asks go out on it. */
  listen(nc: NatsConnection): void {
    this.nc = nc;
    for (const [what, handler] of this.handlers) {
      nc.subscribe(this.subject(this.o.nodeId, what), {
        callback: (err, msg) => {
          if (err || !msg.reply) return;
          void (async () => {
            let reply: unknown;
            try {
              reply = { ok: true, ...((await handler(msg.data.length > 0 ? json.decode(msg.data) : {})) as object) };
            } catch (e) {
              const re = e instanceof RecorderError ? e : new RecorderError('INTERNAL', (e as Error).message);
              reply = { ok: false, error: { code: re.code, message: re.message } };
            }
            // An answer over the NATS payload limit (or a connection closing) throws here:
            // the asker gets a typed refusal instead, and this process goes on.
            try {
              msg.respond(json.encode(reply));
            } catch (e) {
              this.o.log.warn({ what, err: (e as Error).message }, 'cluster: a peer answer could not be sent');
              try {
                msg.respond(
                  json.encode({ ok: false, error: { code: 'PAYLOAD_TOO_LARGE', message: `the answer to ${what} could not be sent: ${(e as Error).message}` } }),
                );
              } catch {
                /* the connection is closing: the asker times out */
              }
            }
          })();
        },
      });
    }
  }

  /** Asks `node` on its `<what>` subject; a refusal of one of our codes is thrown as a RecorderError of that code. */
  async ask<T>(node: string, what: string, body: unknown, timeoutMs = PEER_TIMEOUT_MS): Promise<T> {
    if (!this.nc) throw new RecorderError('CLUSTER_UNAVAILABLE', 'not connected to the cluster');
    const m = await this.nc.request(this.subject(node, what), json.encode(body), { timeout: timeoutMs });
    const r = json.decode(m.data) as { ok: boolean; error?: { code: string; message: string } } & T;
    if (!r.ok) {
      // A refusal (the peer answered with one of our codes) stays typed: callers tell it from a node that did not answer.
      const code = r.error?.code;
      if (isErrorCode(code)) throw new RecorderError(code, `node ${node}: ${r.error?.message ?? ''}`, { details: { node } });
      throw new Error(`node ${node}: ${code ?? 'error'} ${r.error?.message ?? ''}`);
    }
    return r;
  }

  /**
   * Whether NATS says nobody listens on `peer`'s ping subject any more (true: "no
   * responders", its connection is gone), a node answered (false), or neither (null: a
   * timeout or another failure says nothing). cluster/liveness.ts counts it.
   */
  async pingGone(peer: string, timeoutMs: number): Promise<boolean | null> {
    if (!this.nc) return null;
    try {
      await this.nc.request(this.subject(peer, PING), new Uint8Array(0), { timeout: timeoutMs });
      return false;
    } catch (err) {
      return (err as { code?: unknown }).code === ErrorCode.NoResponders ? true : null;
    }
  }

  private subject(node: string, what: string): string {
    return `${this.o.prefix}.v1.node.${node}.${what}`;
  }
}
