/**
 * A TCP forwarder on a loopback port that a test can cut and restore: the network
 * between the recorder and a camera dropping (every connection reset, new ones
 * refused) while the camera itself keeps running and recording to its SD card.
 */
import type { ExecutionContext } from 'ava';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { freePort } from '../../lib/nats-embedded.ts';

export class TcpCut {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly port: number,
    private readonly targetPort: number,
  ) {}

  static async start(t: ExecutionContext, targetPort: number): Promise<TcpCut> {
    const cut = new TcpCut(await freePort(), targetPort);
    await cut.restore();
    t.teardown(() => cut.cut());
    return cut;
  }

  /** Resets every connection and stops accepting new ones. */
  async cut(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }

  async restore(): Promise<void> {
    if (this.server) return;
    const server = createServer((client) => {
      const upstream = connect({ host: '127.0.0.1', port: this.targetPort });
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  url(path: string): string {
    return `rtsp://127.0.0.1:${this.port}/${path}`;
  }
}
