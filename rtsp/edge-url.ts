/**
 * Replay URL templates of a camera's edge storage. Vendors that take the interval in
 * the URL (Hikvision `…/Streaming/tracks/101?starttime=20261125T130000Z&endtime=…`,
 * Dahua `…playback?channel=1&starttime=2026_11_25_13_00_00&…`) are configured with
 * placeholders:
 *   {start} / {end}                   UTC as YYYYMMDDThhmmssZ (the Hikvision form)
 *   {start:PATTERN} / {end:PATTERN}   UTC with tokens YYYY MM DD hh mm ss, e.g.
 *                                     {start:YYYY_MM_DD_hh_mm_ss}
 * Everything else is copied as is. Pure.
 */
const PLACEHOLDER = /\{(start|end)(?::([A-Za-z0-9_.:\-T Z]{1,40}))?\}/g;
const DEFAULT_PATTERN = 'YYYYMMDDThhmmssZ';

export function hasPlaceholders(template: string): boolean {
  return /\{(start|end)(?::[^}]*)?\}/.test(template);
}

/** Problems of a template for a mode, or null. */
export function templateProblem(template: string, mode: 'onvif' | 'url'): string | null {
  const leftover = template.replace(PLACEHOLDER, '');
  if (/[{}]/.test(leftover)) return 'unknown placeholder: use {start}, {end}, {start:PATTERN} or {end:PATTERN}';
  if (mode === 'url' && !(/\{start[:}]/.test(template) && /\{end[:}]/.test(template))) return 'mode "url" needs {start} and {end} in replayUrl';
  let rendered: string;
  try {
    rendered = renderReplayUrl(template, Date.UTC(2026, 0, 1), Date.UTC(2026, 0, 1, 0, 1));
    new URL(rendered);
  } catch {
    return 'replayUrl is not a URL once its placeholders are filled';
  }
  if (!/^rtsps?:\/\/[^\s]+$/.test(rendered)) return 'replayUrl must be an rtsp:// or rtsps:// URL';
  return null;
}

export function renderReplayUrl(template: string, startMs: number, endMs: number): string {
  return template.replace(PLACEHOLDER, (_m, which: string, pattern: string | undefined) =>
    formatUtc(which === 'start' ? startMs : endMs, pattern ?? DEFAULT_PATTERN),
  );
}

export function formatUtc(ms: number, pattern: string): string {
  const d = new Date(ms);
  const two = (n: number): string => String(n).padStart(2, '0');
  const tokens: Record<string, string> = {
    YYYY: String(d.getUTCFullYear()),
    MM: two(d.getUTCMonth() + 1),
    DD: two(d.getUTCDate()),
    hh: two(d.getUTCHours()),
    mm: two(d.getUTCMinutes()),
    ss: two(d.getUTCSeconds()),
  };
  return pattern.replace(/YYYY|MM|DD|hh|mm|ss/g, (t) => tokens[t]!);
}
