/**
 * Fault injection. Both are unset in production and cost one env read where called.
 *
 * crashPoint, for crash-safety tests: when RECORDER_CRASH_POINT names a point the
 * process reaches, it kills itself with SIGKILL right there (no cleanup runs, as in a
 * power cut). Unset in production; the names are listed where they are called
 * (storage/segment-delete.ts, storage/thin.ts) and in docs/settings.md "For tests only".
 */
export function crashPoint(name: string): void {
  if (process.env.RECORDER_CRASH_POINT === name) process.kill(process.pid, 'SIGKILL');
}

/** The error a fault point throws: code INJECTED_FAULT, so no one mistakes it for a real one. */
export class InjectedFault extends Error {
  readonly code = 'INJECTED_FAULT';
  constructor(point: string, key: string) {
    super(`injected fault at ${point} (${key})`);
    this.name = 'InjectedFault';
  }
}

const faultsFired = new Map<string, number>();

/**
 * faultPoint, for containment tests: RECORDER_FAULT_POINT=<name>:<key>[:<times>] (several
 * separated by commas) makes the call `faultPoint(name, key)` throw InjectedFault the
 * first <times> times (default 1) this process reaches it; e.g. `camera.recording:cam2:2`
 * throws inside camera cam2's actor twice. Points: `camera.recording` (an action of the
 * camera machine, actors/camera-machine.ts), `ingest.start` (the start of an ingest
 * attempt, actors/ingest-actor.ts), `http.request` (any HTTP request, keyed by its path
 * without the query, api/http.ts).
 */
export function faultPoint(name: string, key: string): void {
  const specs = process.env.RECORDER_FAULT_POINT;
  if (!specs) return;
  for (const spec of specs.split(',')) {
    const [point, k, times] = spec.trim().split(':');
    if (point !== name || k !== key) continue;
    const id = `${name}:${key}`;
    const fired = faultsFired.get(id) ?? 0;
    if (fired >= (times ? Number(times) : 1)) return;
    faultsFired.set(id, fired + 1);
    throw new InjectedFault(name, key);
  }
}
