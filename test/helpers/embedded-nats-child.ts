/**
 * One embedded nats-server in a process of its own, for tests that need several started
 * at the same instant from separate processes (test/nats-embedded-port.test.ts): loads,
 * prints `ready`, starts on the line `go`, prints `{"port":…}` or `{"error":…}`, and
 * stops its server when stdin ends.
 */
import { createInterface } from 'node:readline';
import { configSchema } from '../../lib/config.ts';
import { silentLogger } from '../../lib/log.ts';
import { startEmbeddedNats, type EmbeddedNats } from '../../lib/nats-embedded.ts';

const dataDir = process.argv[2]!;
const lines = createInterface({ input: process.stdin });
let server: EmbeddedNats | null = null;
lines.on('line', (line) => {
  if (line !== 'go') return;
  startEmbeddedNats({ dataDir, binary: configSchema.parse({}).natsServerPath, log: silentLogger, subjectPrefix: 'rec' }).then(
    (s) => {
      server = s;
      process.stdout.write(`${JSON.stringify({ port: s.port, url: s.url, user: s.auth.natsUser, pass: s.auth.natsPassword })}\n`);
    },
    (err: unknown) => process.stdout.write(`${JSON.stringify({ error: String(err) })}\n`),
  );
});
lines.on('close', () => {
  void (server?.stop() ?? Promise.resolve()).then(() => process.exit(0));
});
process.stdout.write('ready\n');
