/**
 * A one-line progress bar for long CLI work (reindex, check): written to stderr so
 * stdout stays machine-readable, and only when stderr is a terminal (a pipe or a log
 * file gets nothing). Redrawn at most every REDRAW_MS, cleared when done.
 */
const REDRAW_MS = 100;
const WIDTH = 30;

export interface ProgressStream {
  isTTY?: boolean;
  write(s: string): unknown;
}

export class ProgressBar {
  private lastDraw = -Infinity;
  private readonly enabled: boolean;

  constructor(
    private readonly label: string,
    private readonly stream: ProgressStream = process.stderr,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    this.enabled = stream.isTTY === true;
  }

  update(done: number, total: number): void {
    if (!this.enabled) return;
    const now = this.nowMs();
    if (done < total && now - this.lastDraw < REDRAW_MS) return;
    this.lastDraw = now;
    this.stream.write(`\r${renderBar(this.label, done, total)}`);
  }

  done(): void {
    if (this.enabled) this.stream.write('\r\x1b[2K');
  }
}

/** `label [#######-------]  42% 420/1000`, fixed width, no escape codes. */
export function renderBar(label: string, done: number, total: number): string {
  const f = total > 0 ? Math.min(1, Math.max(0, done / total)) : 1;
  const fill = Math.round(f * WIDTH);
  return `${label} [${'#'.repeat(fill)}${'-'.repeat(WIDTH - fill)}] ${String(Math.floor(f * 100)).padStart(3)}% ${done}/${total}`;
}
