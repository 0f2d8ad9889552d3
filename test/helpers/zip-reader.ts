/**
 * A ZIP as Python's zipfile reads it (an independent reader from the yazl that wrote
 * it): each entry's name, size, SHA-256, whether it is stored, and a JPEG's width.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface ZipEntry {
  name: string;
  size: number;
  sha: string;
  stored: boolean;
  width: number;
}

/** The entries of the ZIP `bytes` (written to a file in `dir` for Python to read). */
export async function readZip(dir: string, bytes: Buffer): Promise<ZipEntry[]> {
  const file = join(dir, `z${Date.now()}${Math.random()}.zip`);
  await writeFile(file, bytes);
  const script = [
    'import hashlib, json, struct, sys, zipfile',
    'z = zipfile.ZipFile(sys.argv[1])',
    'assert z.testzip() is None',
    'def width(b):',
    '  i = 2',
    '  while i < len(b):',
    '    m = b[i + 1]; n = struct.unpack(">H", b[i + 2:i + 4])[0]',
    '    if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC): return struct.unpack(">H", b[i + 7:i + 9])[0]',
    '    i += 2 + n',
    'out = []',
    'for info in z.infolist():',
    '  b = z.read(info)',
    '  out.append({"name": info.filename, "size": info.file_size, "sha": hashlib.sha256(b).hexdigest(), "stored": info.compress_type == 0, "width": width(b)})',
    'print(json.dumps(out))',
  ].join('\n');
  const { stdout } = await run('python3', ['-c', script, file]);
  return JSON.parse(stdout) as ZipEntry[];
}
