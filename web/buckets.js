// The Files panel: the recorder's S3 buckets in the browser. Every S3 request is a
// presigned URL the HTTP API signs with the user's own access key (POST /api/s3/presign),
// sent straight to the S3 listener: the page never holds a secret, and S3's own rules
// (the user's pools, ACLs, versions, durability) apply as to any S3 client.

import { apiJson, ApiError } from './api.js';

async function presign(method, bucket, key, query) {
  const body = { method };
  if (bucket) body.bucket = bucket;
  if (key) body.key = key;
  if (query) body.query = query;
  const answer = await apiJson('/api/s3/presign', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return answer.url;
}

/** One S3 request through a presigned URL; S3's XML error becomes an ApiError with its code. */
async function s3(method, bucket, key, query, init = {}) {
  const url = await presign(method, bucket, key, query);
  let res;
  try {
    res = await fetch(url, { method, credentials: 'omit', ...init });
  } catch (err) {
    throw new ApiError(0, 'NETWORK', `S3 listener not reachable: ${err.message}`);
  }
  if (!res.ok) {
    const doc = new DOMParser().parseFromString(await res.text(), 'application/xml');
    throw new ApiError(res.status, doc.querySelector('Code')?.textContent || `HTTP_${res.status}`, doc.querySelector('Message')?.textContent || res.statusText);
  }
  return res;
}

async function xml(res) {
  return new DOMParser().parseFromString(await res.text(), 'application/xml');
}

const text = (el, name) => el.getElementsByTagName(name)[0]?.textContent ?? '';

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export class FilesPanel {
  /** `els`: the panel's elements by role; `showError`: the page's error line. */
  constructor(els, showError) {
    this.els = els;
    this.showError = showError;
    this.bucket = null;
    this.prefix = '';
    this.next = null;
    els.up.addEventListener('click', () => this.up());
    els.more.addEventListener('click', () => this.listObjects(true));
    els.upload.addEventListener('change', () => this.upload([...els.upload.files]));
  }

  async show() {
    this.bucket = null;
    this.prefix = '';
    await this.refresh();
  }

  async refresh() {
    try {
      if (this.bucket === null) await this.listBuckets();
      else await this.listObjects(false);
    } catch (err) {
      this.showError(err);
    }
  }

  up() {
    if (this.bucket === null) return;
    if (this.prefix === '') this.bucket = null;
    else this.prefix = this.prefix.replace(/[^/]*\/$/, '');
    void this.refresh();
  }

  path() {
    return this.bucket === null ? 'buckets' : `${this.bucket}/${this.prefix}`;
  }

  async listBuckets() {
    const doc = await xml(await s3('GET'));
    const rows = [...doc.getElementsByTagName('Bucket')].map((b) => ({ kind: 'bucket', name: text(b, 'Name'), modified: text(b, 'CreationDate') }));
    this.render(rows, false);
  }

  async listObjects(more) {
    const query = { 'list-type': '2', delimiter: '/', 'max-keys': '200' };
    if (this.prefix) query.prefix = this.prefix;
    if (more && this.next) query['continuation-token'] = this.next;
    const doc = await xml(await s3('GET', this.bucket, undefined, query));
    this.next = text(doc.documentElement, 'IsTruncated') === 'true' ? text(doc.documentElement, 'NextContinuationToken') : null;
    const folders = [...doc.getElementsByTagName('CommonPrefixes')].map((p) => ({ kind: 'folder', key: text(p, 'Prefix') }));
    const files = [...doc.getElementsByTagName('Contents')].map((c) => ({
      kind: 'file',
      key: text(c, 'Key'),
      bytes: Number(text(c, 'Size')),
      modified: text(c, 'LastModified'),
    }));
    this.render([...folders, ...files], more);
  }

  render(rows, append) {
    const { body, path, up, upload, more } = this.els;
    path.textContent = this.path();
    up.disabled = this.bucket === null;
    upload.disabled = this.bucket === null;
    more.hidden = !this.next || this.bucket === null;
    if (!append) body.replaceChildren();
    for (const r of rows) {
      const tr = document.createElement('tr');
      tr.dataset.kind = r.kind;
      const name = document.createElement('td');
      const label = r.kind === 'bucket' ? r.name : r.key.slice(this.prefix.length);
      if (r.kind === 'file') {
        name.textContent = label;
      } else {
        const open = document.createElement('button');
        open.className = 'link';
        open.textContent = label;
        open.addEventListener('click', () => {
          if (r.kind === 'bucket') {
            this.bucket = r.name;
            this.prefix = '';
          } else this.prefix = r.key;
          this.next = null;
          void this.refresh();
        });
        name.append(open);
      }
      const bytes = document.createElement('td');
      bytes.textContent = r.kind === 'file' ? size(r.bytes) : '';
      const modified = document.createElement('td');
      modified.textContent = r.modified ? new Date(r.modified).toLocaleString() : '';
      const actions = document.createElement('td');
      if (r.kind === 'file') {
        const get = document.createElement('button');
        get.textContent = 'Download';
        get.addEventListener('click', () => this.download(r.key).catch((err) => this.showError(err)));
        const del = document.createElement('button');
        del.textContent = 'Delete';
        del.addEventListener('click', () => this.remove(r.key).catch((err) => this.showError(err)));
        actions.append(get, del);
      }
      tr.append(name, bytes, modified, actions);
      body.append(tr);
    }
  }

  async download(key) {
    const file = key.split('/').pop();
    const url = await presign('GET', this.bucket, key, { 'response-content-disposition': `attachment; filename="${file.replace(/["\\]/g, '_')}"` });
    const a = document.createElement('a');
    a.href = url;
    a.download = file;
    document.body.append(a);
    a.click();
    a.remove();
  }

  async remove(key) {
    if (!confirm(`Delete ${key}?`)) return;
    await s3('DELETE', this.bucket, key);
    await this.refresh();
  }

  async upload(files) {
    const { status, upload } = this.els;
    try {
      for (const [i, f] of files.entries()) {
        status.textContent = `uploading ${f.name} (${i + 1} of ${files.length}, ${size(f.size)})…`;
        await s3('PUT', this.bucket, this.prefix + f.name, undefined, { body: f });
      }
      status.textContent = files.length ? `uploaded ${files.length} file${files.length > 1 ? 's' : ''}` : '';
    } catch (err) {
      status.textContent = '';
      this.showError(err);
    } finally {
      upload.value = '';
    }
    await this.refresh();
  }
}
