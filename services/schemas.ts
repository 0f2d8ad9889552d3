/**
 * Request bodies of the NATS and HTTP interfaces (docs/api/), validated by one zod
 * schema each. Unknown keys are rejected so a typo in a VMS integration surfaces as an
 * error instead of being silently ignored.
 */
import { z } from 'zod';
import { ID_PATTERN } from '../storage/layout.ts';
import { slotProblem } from '../schedule/plan.ts';
import { templateProblem } from '../rtsp/edge-url.ts';

/** `/` and the system's own trees: a backup copy there would overwrite or fill the system. */
const SYSTEM_DIRS = /^\/+(?:(?:bin|boot|dev|etc|lib|lib32|lib64|libx32|proc|run|sbin|sys|usr)(?:\/.*)?)?\/*$/;

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
    transport: z
      .enum(['auto', 'tcp', 'udp', 'http'])
      .default('auto')
      .describe('RTSP lower transport: auto tries TCP and uses UDP once the camera refuses TCP (461); http tunnels RTSP in HTTP (rtsp/rtsp-transport.ts)'),
    record: z
      .object({
        stream: z.enum(['main', 'sub']).default('main'),
        format: z
          .enum(['mp4', 'ps'])
          .optional()
          .describe("segment format: fragmented MP4, or MPEG program stream (H.264/H.265, AAC); unset: the pool's, else mp4"),
      })
      .strict()
      .default({ stream: 'main' }),
    edge: z
      .object({
        replayUrl: z.string().max(2048).describe('rtsp URL of the edge replay; may hold {start}/{end} placeholders (rtsp/edge-url.ts)'),
        mode: z.enum(['onvif', 'url']).default('onvif').describe('onvif: Range: clock= replay; url: the interval is in the URL'),
        rateControl: z.boolean().default(false).describe('false asks the camera for Rate-Control: no (faster than real time)'),
      })
      .strict()
      .superRefine((e, ctx) => {
        const problem = templateProblem(e.replayUrl, e.mode);
        if (problem) ctx.addIssue({ code: 'custom', message: problem, path: ['replayUrl'] });
      })
      .optional(),
  })
  .strict()
  .refine((c) => c.record.stream === 'main' || c.streams.sub !== undefined, {
    message: 'record.stream is "sub" but streams.sub is missing',
    path: ['record', 'stream'],
  });

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

/** `rec.v1.backfill` / `POST /api/cameras/:id/backfill`: fetch a range from the edge storage. */
export const backfillSchema = z.object({ camera: id, from: time, to: time }).strict();
/** `rec.v1.cluster.drain`: drain a node (default: the one asked) or end its drain. */
export const clusterDrainSchema = z
  .object({
    node: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{0,62}$/)
      .optional(),
    drain: z.boolean().default(true),
  })
  .strict();

export const manualSchema = z.object({ camera: id }).strict();

export const searchSchema = z
  .object({
    camera: id,
    from: time,
    to: time,
    types: z.array(z.string().max(40)).max(20).optional(),
    locked: z.boolean().optional().describe('only video under an active lock'),
    label: z.string().min(1).max(200).optional().describe('only video under labels whose text contains this'),
  })
  .strict();

// ---- pools, locks, labels ------------------------------------------------------

export const poolIdSchema = z.object({ id }).strict();

export const poolPutSchema = z
  .object({
    id,
    capacityBytes: z.number().int().positive().nullable().describe('bytes the pool may hold; null: bounded by the disk only'),
    overwrite: z.enum(['none', 'capacity', 'cycle']),
    cycleDays: z.number().positive().max(36500).optional(),
    maxLockShare: z.number().gt(0).max(1).optional(),
    thinAfterDays: z.number().positive().max(36500).optional(),
    pictureCapacityBytes: z.number().int().positive().optional().describe("bytes the pool's pictures may hold before the oldest are covered"),
    backupDir: z
      .string()
      .min(1)
      .max(1024)
      .regex(/^\//, 'backupDir must be an absolute path')
      .refine((d) => !d.split('/').includes('..'), 'backupDir must not contain ..')
      .refine((d) => !SYSTEM_DIRS.test(d), 'backupDir must be a directory of its own on another disk, not / or a system directory')
      .optional(),
    format: z.enum(['mp4', 'ps']).optional().describe('segment format of cameras that set none (default mp4)'),
    copies: z.number().int().min(1).max(3).optional().describe('in a cluster: nodes that hold each closed segment (default 1)'),
    receivesBackups: z.boolean().optional().describe("in a cluster: this pool keeps other clusters' backups (default false)"),
    backupCluster: z
      .object({
        servers: z
          .array(
            z.string().regex(/^(nats|tls):\/\/[^\s/@]+$/, 'a NATS server URL without credentials: nats://host:port (user and pass are fields of their own)'),
          )
          .min(1)
          .max(16),
        user: z.string().min(1).max(256).optional(),
        pass: z.string().min(1).max(1024).optional(),
        prefix: z
          .string()
          .regex(/^[A-Za-z0-9_-]{1,64}$/)
          .optional(),
        pool: id.optional(),
      })
      .strict()
      .optional()
      .describe('in a cluster: another cluster that receives a copy of every closed segment (docs/cluster.md)'),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.overwrite === 'cycle' && p.cycleDays === undefined) ctx.addIssue({ code: 'custom', message: 'cycle mode needs cycleDays', path: ['cycleDays'] });
    if (p.overwrite !== 'cycle' && p.cycleDays !== undefined)
      ctx.addIssue({ code: 'custom', message: 'cycleDays applies to cycle mode only', path: ['cycleDays'] });
    if (p.overwrite === 'none' && p.capacityBytes === null)
      ctx.addIssue({ code: 'custom', message: 'mode none needs a capacity to stop at', path: ['capacityBytes'] });
  });

export const lockSchema = z.object({ camera: id, from: time, to: time, until: time.nullable().optional() }).strict();
export const unlockSchema = z.union([z.object({ id: z.string().uuid() }).strict(), z.object({ camera: id, from: time, to: time }).strict()]);

const labelText = z.string().min(1).max(2000, 'label text is at most 2000 characters');
export const labelAddSchema = z.object({ camera: id, from: time, to: time, text: labelText }).strict();
export const labelUpdateSchema = z.object({ id: z.string().uuid(), from: time.optional(), to: time.optional(), text: labelText.optional() }).strict();
export const labelIdSchema = z.object({ id: z.string().uuid() }).strict();
export const labelSearchSchema = z
  .object({
    camera: id.optional(),
    from: time.optional(),
    to: time.optional(),
    text: z.string().max(200).optional(),
    limit: z.number().int().positive().max(10_000).optional(),
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

export { validate } from '../lib/validate.ts';
