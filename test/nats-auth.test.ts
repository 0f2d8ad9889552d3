/**
 * The embedded nats-server (issue 13 item 4) through its real interface: credentials
 * generated at first start (0600, never logged), an anonymous client refused, the
 * `observer` user unable to touch the control API but hearing alarms, the `vms` user in
 * control; and supervision: a SIGKILLed nats-server is started again on its port, the
 * camera-offline alarm raised while it was down arrives afterwards, status and control
 * go on, and no nats-server outlives the recorder.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { Events, connect, type NatsConnection, type Status } from 'nats';
import { SimCamera, freePort } from '../sim/camera.ts';
import { configSchema } from '../lib/config.ts';
import { createLogger } from '../lib/log.ts';
import { credentialsFile, readEmbeddedNatsCredentials, serverConfigFile } from '../lib/nats-credentials.ts';
import { RecorderNode } from '../node.ts';
import { embeddedNatsUser, getJson, startNode, tempDir, waitFor } from './helpers/recorder.ts';

const run = promisify(execFile);

/** The answer to rec.v1.camera.list, as far as these tests read it. */
interface CameraList {
  cameras: { id: string }[];
}

/** Processes whose command line names the data dir (the nats-server and its sh wrapper). */
async function processesMentioning(dir: string): Promise<string[]> {
  const { stdout } = await run('pgrep', ['-af', dir]).catch(() => ({ stdout: '' }));
  return stdout.split('\n').filter((l) => l.trim() && !l.includes('pgrep'));
}

async function natsServersOf(dir: string): Promise<string[]> {
  return (await processesMentioning(dir)).filter((l) => /^\d+ nats-server /.test(l));
}

async function refusal(servers: string, opts: object): Promise<string> {
  try {
    const nc = await connect({ servers, reconnect: false, timeout: 5000, ...opts });
    await nc.close();
    return 'connected';
  } catch (err) {
    return String((err as { code?: string }).code ?? (err as Error).message);
  }
}

/** Permission violations the server reported to this client, as `publish <subject>` / `subscription <subject>`. */
function violations(nc: NatsConnection): string[] {
  const seen: string[] = [];
  void (async () => {
    for await (const s of nc.status() as AsyncIterable<Status & { permissionContext?: { operation: string; subject: string } }>) {
      if (s.type === Events.Error && s.data === 'PERMISSIONS_VIOLATION' && s.permissionContext)
        seen.push(`${s.permissionContext.operation} ${s.permissionContext.subject}`);
    }
  })();
  return seen;
}

test('embedded NATS: generated credentials, anonymous refused, observer cannot delete, vms controls', async (t) => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  const dir = await tempDir(t);
  const config = configSchema.parse({ dataDir: dir, http: '127.0.0.1:0', logLevel: 'debug', minFreeBytes: 0, minFreeRatio: 0 });
  let node = await RecorderNode.start({ config, log: createLogger('debug', sink) });
  t.teardown(() => node.stop());
  await node.natsReady();
  const url = node.natsUrl!;

  // Generated at first start, readable by the recorder's user (and root) only.
  const creds = readEmbeddedNatsCredentials(dir)!;
  t.truthy(creds);
  t.is(statSync(credentialsFile(dir)).mode & 0o777, 0o600);
  t.is(statSync(serverConfigFile(dir)).mode & 0o777, 0o600);
  t.is(creds.url, url, 'the file says where the server listens');
  t.deepEqual(Object.keys(creds.users).sort(), ['observer', 'recorder', 'vms']);
  const passwords = Object.values(creds.users).map((u) => u.password);
  t.is(new Set(passwords).size, 3);
  // The log says where the credentials are, never what they are.
  const started = lines.map((l) => JSON.parse(l) as { msg: string; credentials?: string }).find((l) => l.msg.startsWith('embedded nats-server started'));
  t.is(started?.credentials, credentialsFile(dir));
  for (const p of passwords)
    t.false(
      lines.some((l) => l.includes(p)),
      'a NATS password in the log',
    );

  // No credentials, a wrong password, a known user with another's password: refused.
  t.is(await refusal(url, {}), 'AUTHORIZATION_VIOLATION');
  t.is(await refusal(url, { user: 'vms', pass: 'wrong-password-0123456789' }), 'AUTHORIZATION_VIOLATION');
  t.is(await refusal(url, { user: 'vms', pass: creds.users.observer.password }), 'AUTHORIZATION_VIOLATION');

  // vms: the control API.
  const vms = await connect({ servers: url, ...embeddedNatsUser(dir, 'vms') });
  t.teardown(() => vms.close());
  const vmsViolations = violations(vms);
  const request = async <T>(subject: string, body: unknown): Promise<T> =>
    JSON.parse((await vms.request(subject, JSON.stringify(body), { timeout: 10_000 })).string()) as T;
  const put = await request<{ ok: boolean }>('rec.v1.camera.put', { id: 'cam', streams: { main: `rtsp://127.0.0.1:${await freePort()}/none` } });
  t.true(put.ok, JSON.stringify(put));
  const info = JSON.parse((await vms.request('$SRV.INFO.recorder', '', { timeout: 5000 })).string()) as { name: string };
  t.is(info.name, 'recorder', 'service discovery');

  // observer: hears status and alarms, may publish nothing.
  const observer = await connect({ servers: url, ...embeddedNatsUser(dir, 'observer') });
  t.teardown(() => observer.close());
  const observerViolations = violations(observer);
  observer.subscribe('rec.v1.alarm.>');
  observer.subscribe('rec.v1.status.>');
  await observer.flush();
  await t.throwsAsync(
    observer.request('rec.v1.camera.delete', JSON.stringify({ id: 'cam', purge: true }), { timeout: 3000 }),
    undefined,
    'a request needs a reply inbox the observer may not have',
  );
  observer.publish('rec.v1.camera.delete', JSON.stringify({ id: 'cam', purge: true }));
  await observer.flush();
  await waitFor('the publish violation', () => observerViolations.includes('publish rec.v1.camera.delete'), 10_000, 50);
  t.false(
    observerViolations.some((v) => /^subscription rec\.v1\.(alarm|status)/.test(v)),
    observerViolations.join('; '),
  );
  t.false(observer.isClosed());
  const list = await request<CameraList>('rec.v1.camera.list', {});
  t.deepEqual(
    list.cameras.map((c) => c.id),
    ['cam'],
    'the camera is still there',
  );

  // vms may not answer in the recorder's place, nor publish alarms or statuses.
  vms.subscribe('rec.v1.camera.delete');
  vms.publish('rec.v1.alarm.camera-offline', JSON.stringify({ kind: 'camera-offline', camera: 'cam', message: 'spoofed' }));
  await waitFor(
    'both violations',
    () => vmsViolations.includes('subscription rec.v1.camera.delete') && vmsViolations.includes('publish rec.v1.alarm.camera-offline'),
    10_000,
    50,
  );

  // A restart keeps the passwords and, when it is free, the port.
  await vms.close();
  await observer.close();
  await node.stop();
  node = await RecorderNode.start({ config, log: createLogger('silent') });
  await node.natsReady();
  t.is(node.natsUrl, url);
  t.deepEqual(readEmbeddedNatsCredentials(dir)!.users, creds.users);
  t.is(await refusal(node.natsUrl!, {}), 'AUTHORIZATION_VIOLATION');
  t.is(await refusal(node.natsUrl!, embeddedNatsUser(dir, 'vms')), 'connected');
});

test('a SIGKILLed embedded nats-server is restarted: alarms raised while it was down arrive, control works again, nothing leaks', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t, { segmentSeconds: 4 });
  const embedded = n.node.embeddedNats!;
  const url = n.node.natsUrl!;
  // Clients as a VMS would hold them: reconnecting for ever, sooner than the recorder's grace.
  const forever = { maxReconnectAttempts: -1, reconnectTimeWait: 250 };
  const vms = await connect({ servers: url, ...embeddedNatsUser(n.dataDir, 'vms'), ...forever });
  t.teardown(() => vms.close());
  const observer = await connect({ servers: url, ...embeddedNatsUser(n.dataDir, 'observer'), ...forever });
  t.teardown(() => observer.close());
  const alarms: { kind: string; camera?: string; at: string }[] = [];
  observer.subscribe('rec.v1.alarm.>', { callback: (_e, m) => alarms.push(m.json()) });
  const statuses: { state: string; at: string; receivedAt: number }[] = [];
  vms.subscribe('rec.v1.status.cam', { callback: (_e, m) => statuses.push({ ...m.json<{ state: string; at: string }>(), receivedAt: Date.now() }) });
  await observer.flush();
  await vms.flush();
  const request = async <T>(subject: string, body: unknown): Promise<T> =>
    JSON.parse((await vms.request(subject, JSON.stringify(body), { timeout: 10_000 })).string()) as T;
  t.true((await request<{ ok: boolean }>('rec.v1.camera.put', { id: 'cam', streams: { main: sim.url('h264') } })).ok);
  await waitFor('recording', () => statuses.some((s) => s.state === 'recording'), 30_000);
  t.is((await natsServersOf(n.dataDir)).length, 1);

  // Kill the server and hold its port, so it stays down until the alarm has been raised.
  const pid = embedded.pid()!;
  t.truthy(pid);
  process.kill(pid, 'SIGKILL');
  let holder: Server | null = null;
  // Clients that reach the holder are hung up on at once (they retry), never left waiting.
  await waitFor(
    'the port held',
    () =>
      new Promise<boolean>((resolve) => {
        const srv = createServer((s) => s.destroy());
        srv.once('error', () => resolve(false));
        srv.listen(embedded.port, '127.0.0.1', () => {
          holder = srv;
          resolve(true);
        });
      }),
    900,
    10,
  ).catch(() => t.fail('the server came back before the test could hold its port'));
  t.teardown(() => holder?.close());
  await waitFor('the server seen dead', () => embedded.pid() === null, 10_000, 50);

  // The camera goes away while NATS is down: its offline alarm is raised now.
  await sim.stop();
  await waitFor(
    'camera in backoff',
    async () => (await getJson<{ camera: { status: string } }>(`${n.http}/api/cameras/cam`)).body.camera.status === 'backoff',
    30_000,
  );
  t.is(embedded.pid(), null, 'still down: restarts fail while the port is taken');
  t.is(embedded.restarts(), 0);
  t.deepEqual(
    alarms.filter((a) => a.camera === 'cam'),
    [],
  );
  const downUntil = Date.now();

  // Port free: the next attempt (1 s doubling to 30 s) starts it on the same port.
  await new Promise<void>((resolve) => holder!.close(() => resolve()));
  holder = null;
  await waitFor('restarted', () => embedded.pid() !== null, 40_000, 100);
  t.not(embedded.pid(), pid);
  t.is(embedded.restarts(), 1);
  t.is(n.node.natsUrl, url);

  // Delivered after the restart, raised before it.
  const offline = await waitFor('the camera-offline alarm', () => alarms.find((a) => a.kind === 'camera-offline' && a.camera === 'cam'), 30_000, 100);
  t.true(Date.parse(offline.at) <= downUntil, `raised at ${offline.at}, while the server was down`);
  t.is(alarms.filter((a) => a.kind === 'camera-offline' && a.camera === 'cam').length, 1, 'once');
  // Status goes on: the camera's state reaches the VMS after the restart.
  await waitFor('a status after the restart', () => statuses.some((s) => s.receivedAt > downUntil && s.state !== 'recording'), 30_000, 100);

  // Control works again, through the same service.
  const got = await request<{ ok: boolean; camera: { status: string } }>('rec.v1.camera.get', { id: 'cam' });
  t.true(got.ok);
  t.not(got.camera.status, 'recording');
  t.true((await request<{ ok: boolean }>('rec.v1.camera.put', { id: 'cam2', streams: { main: sim.url('h264') } })).ok);
  t.deepEqual((await request<CameraList>('rec.v1.camera.list', {})).cameras.map((c) => c.id).sort(), ['cam', 'cam2']);
  // One server, and the dead one's wrapper gone with it.
  t.is((await natsServersOf(n.dataDir)).length, 1);
  await waitFor('one wrapper', async () => (await processesMentioning(n.dataDir)).filter((l) => / sh -c /.test(l)).length <= 2, 10_000).catch(async () =>
    t.fail((await processesMentioning(n.dataDir)).join('\n')),
  );

  await vms.close();
  await observer.close();
  await n.node.stop();
  await waitFor('no nats-server left', async () => (await processesMentioning(n.dataDir)).length === 0, 10_000).catch(async () =>
    t.fail((await processesMentioning(n.dataDir)).join('\n')),
  );
});
