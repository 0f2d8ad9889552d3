/**
 * Request bodies of the NATS and HTTP interfaces (CONTRACT.md), validated by one zod
 * schema each. Unknown keys are rejected so a typo in a VMS integration surfaces as an
 * error instead of being silently ignored.
 */
import { z } from 'zod';
import { ValidationError } from '../lib/errors.ts';
import { ID_PATTERN } from '../storage/layout.ts';
import { slotProblem } from '../schedule/plan.ts';

const id = z.string().regex(ID_PATTERN, 'ids are 1-64 characters of A-Z a-z 0-9 _ -, starting with a letter or digit');
const rtspUrl = z
  .string()
  .max(2048)
  .regex(/^rtsps?:\/\/[^\s]+$/, 'expected an rtsp:// or rtsps:// URL');
const time = z.union([z.string().max(40), z.number()]);

export const cameraPutSchema = z
  .object({
    id,
    name: z.string().max(200).optional(),
    pool: id.default('default'),
    streams: z.object({ main: rtspUrl, sub: rtspUrl.optional() }).strict(),
    record: z
      .object({
        stream: z.enum(['main', 'sub']).default('main'),
        format: z.enum(['mp4', 'ps']).default('mp4').describe('segment format: fragmented MP4, or MPEG program stream (H.264/H.265, AAC)'),
      })
      .strict()
      .default({ stream: 'main', format: 'mp4' }),
    edge: z.object({ replayUrl: z.string().max(2048) }).strict().optional(),
  })
  .strict()
  .refine((c) => c.record.stream === 'main' || c.streams.sub !== undefined, { message: 'record.stream is "sub" but streams.sub is missing', path: ['record', 'stream'] });

export const cameraIdSchema = z.object({ id }).strict();
export const cameraDeleteSchema = z.object({ id, purge: z.boolean().default(false) }).strict();
export const emptySchema = z.object({}).strict();

const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$|^24:00$/, 'expected HH:MM');

export const schedulePutSchema = z
  .object({
    camera: id,
    timeZone: z
      .string()
      .default('UTC')
      .refine((tz) => isTimeZone(tz), 'unknown IANA time zone'),
    slots: z
      .array(
        z
          .object({
            days: z.array(z.number().int().min(0).max(6)).min(1).max(7),
            start: hhmm,
            end: hhmm,
            type: z.enum(['timing', 'event']).describe('timing records always; event records only around events'),
            stream: z.enum(['main', 'sub']).optional().describe('stream recorded in this slot; default the camera record.stream'),
          })
          .strict(),
      )
      .max(100),
    preSeconds: z.number().int().min(0).max(60).default(0),
    postSeconds: z.number().int().min(0).max(3600).default(0),
  })
  .strict()
  .superRefine((plan, ctx) => {
    const problem = slotProblem(plan.slots);
    if (problem) ctx.addIssue({ code: 'custom', message: problem, path: ['slots'] });
  });

/** Event types: the NVR ones (motion, alarm, vca, manual) or any custom word. */
export const eventSchema = z
  .object({
    type: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$/, 'event types are 1-40 characters of A-Z a-z 0-9 _ . : -'),
    action: z.enum(['start', 'stop', 'pulse']),
    at: time.optional(),
    seconds: z.number().positive().max(3600).optional().describe('length of a pulse; default 1 s'),
  })
  .strict();

export const manualSchema = z.object({ camera: id }).strict();

export const searchSchema = z
  .object({
    camera: id,
    from: time,
    to: time,
    types: z.array(z.string().max(40)).max(20).optional(),
  })
  .strict();

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** Parses with a schema or throws a ValidationError listing every problem. */
export function validate<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const result = schema.safeParse(body);
  if (!result.success) {
    const issues = result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
    throw new ValidationError(issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; '), issues);
  }
  return result.data;
}
