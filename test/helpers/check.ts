/**
 * `recorder check` on a data dir (the recorder stopped): its exit code (0 consistent,
 * 1 something to repair) and the `pictures` part of its JSON report.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export async function checkPictures(dataDir: string): Promise<{ code: number; pictures: Record<string, unknown> }> {
  try {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../../recorder.ts'), 'check'], {
      env: { ...process.env, RECORDER_DATA_DIR: dataDir, RECORDER_LOG_LEVEL: 'silent' },
    });
    return { code: 0, pictures: (JSON.parse(stdout) as { pictures: Record<string, unknown> }).pictures };
  } catch (err) {
    const e = err as { code: number; stdout: string };
    return { code: e.code, pictures: (JSON.parse(e.stdout) as { pictures: Record<string, unknown> }).pictures };
  }
}
