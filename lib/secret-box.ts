/**
 * Secrets kept at rest sealed (AES-256-GCM) under a key that lives in a file of its own,
 * not in the index: a copy of the index (a backup, a disk sent for repair, an index
 * shipped with a bug report) holds no usable secret. Used for users' S3 secret keys,
 * which SigV4 needs in clear to check a signature, so a one-way digest cannot replace
 * them (buckets/keys.ts).
 *
 * The key file (RECORDER_SECRET_KEY_FILE, default `<data>/secret.key`) holds 32 random
 * bytes, mode 0600, made on first use durably (tmp, fsync, rename, fsync of the
 * folder) so a crash never leaves a torn key that would lose every secret it sealed.
 * Keep it off the data disk (a mounted secret) for the protection to reach a stolen disk.
 *
 * Format of a sealed value: `sealed:v1:` + base64(iv 12 | tag 16 | ciphertext). A value
 * that does not open (another key file, changed bytes) is SECRET_UNREADABLE, never
 * garbage; a value without the prefix is a legacy clear one (`isSealed` tells).
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { link, open, readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RecorderError } from './errors.ts';

const PREFIX = 'sealed:v1:';
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  /**
   * A box whose key is derived (HKDF-SHA256) from a secret several parties hold, for one
   * purpose: nodes of a cluster seal with the key of the cluster token what every node
   * must open, and the value never travels or rests in clear.
   */
  static derived(secret: string, purpose: string): SecretBox {
    return new SecretBox(Buffer.from(hkdfSync('sha256', secret, 'recorder-secret-box', purpose, KEY_BYTES)));
  }

  /** The box of the key file at `path`, made (durably) when it does not exist. A file of the wrong size is CONFIG_INVALID. */
  static async open(path: string): Promise<SecretBox> {
    let key: Buffer;
    try {
      key = await readFile(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      key = await makeKeyFile(path);
    }
    if (key.length !== KEY_BYTES) throw new RecorderError('CONFIG_INVALID', `${path} is not a secret key file (${key.length} bytes, ${KEY_BYTES} expected)`);
    return new SecretBox(key);
  }

  seal(clear: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const body = Buffer.concat([cipher.update(clear, 'utf8'), cipher.final()]);
    return PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
  }

  /** The clear value of a sealed one; SECRET_UNREADABLE when it was sealed under another key or changed. */
  unseal(sealed: string): string {
    if (!isSealed(sealed)) throw new RecorderError('SECRET_UNREADABLE', 'not a sealed value');
    const raw = Buffer.from(sealed.slice(PREFIX.length), 'base64');
    if (raw.length < IV_BYTES + TAG_BYTES) throw new RecorderError('SECRET_UNREADABLE', 'a sealed value too short to hold one');
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, IV_BYTES));
      decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch (err) {
      throw new RecorderError('SECRET_UNREADABLE', 'a sealed secret does not open with this key file (another key file, or changed bytes)', { cause: err });
    }
  }
}

export function isSealed(value: string): boolean {
  return value.startsWith(PREFIX);
}

async function makeKeyFile(path: string): Promise<Buffer> {
  const key = randomBytes(KEY_BYTES);
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(key);
    await fh.sync();
  } finally {
    await fh.close();
  }
  // link, not rename: it never replaces a key file another caller made meanwhile (that one wins, ours goes).
  try {
    await link(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    await unlink(tmp);
    return readFile(path);
  }
  await unlink(tmp);
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
  return key;
}
