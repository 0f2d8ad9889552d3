/** One JSON line per event (pino), as CONTRACT.md "Start" asks. */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino({ level, base: { app: 'recorder' }, timestamp: pino.stdTimeFunctions.isoTime }, destination ?? process.stdout);
}

export const silentLogger: Logger = pino({ level: 'silent' });
