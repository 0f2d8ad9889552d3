/**
 * One JSON line per event (pino), as docs/settings.md says. Every line passes
 * through redactText as it is written: a camera URL's password never reaches a log,
 * whoever logged it (an error quoting ffmpeg, which quotes its input URL, included).
 */
import { pino, type Logger } from 'pino';
import { redactText } from './redact.ts';

export type { Logger };

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    { level, base: { app: 'recorder' }, timestamp: pino.stdTimeFunctions.isoTime, hooks: { streamWrite: redactText } },
    destination ?? process.stdout,
  );
}

export const silentLogger: Logger = pino({ level: 'silent' });
