/**
 * Fault injection for crash-safety tests: when RECORDER_CRASH_POINT names a point the
 * process reaches, it kills itself with SIGKILL right there (no cleanup runs, as in a
 * power cut). Unset in production; the names are listed where they are called
 * (storage/segment-delete.ts, storage/thin.ts) and in README "Crash safety".
 */
export function crashPoint(name: string): void {
  if (process.env.RECORDER_CRASH_POINT === name) process.kill(process.pid, 'SIGKILL');
}
