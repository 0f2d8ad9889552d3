// The recorder's HTTP API as the UI uses it: every call carries the bearer token (when
// one is set) and every failure becomes an ApiError with the server's {error:{code,message}}.

const TOKEN_KEY = 'recorder.token';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** WebSocket subprotocols: ours, plus the token (browsers cannot set headers on a WebSocket). */
export function wsProtocols() {
  const token = getToken();
  if (!token) return ['recorder.v1'];
  const b64url = btoa(String.fromCharCode(...new TextEncoder().encode(token)))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '');
  return ['recorder.v1', `bearer.${b64url}`];
}

/** Turns a failed response into an ApiError, reading the typed error body when there is one. */
export async function errorFrom(res) {
  let code = `HTTP_${res.status}`;
  let message = res.statusText || 'request failed';
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message);
}

export async function apiFetch(path, opts = {}) {
  let res;
  try {
    // credentials 'omit': the server's 401 carries a Basic challenge, and a fetch with
    // credentials would make the browser pop its own login dialog (and wait on it);
    // the UI asks for the token itself and sends it explicitly.
    res = await fetch(path, { ...opts, credentials: 'omit', headers: { ...authHeaders(), ...(opts.headers || {}) } });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'NETWORK', `recorder not reachable: ${err.message}`);
  }
  if (!res.ok) throw await errorFrom(res);
  return res;
}

export async function apiJson(path, opts = {}) {
  return (await apiFetch(path, opts)).json();
}

export function iso(ms) {
  return new Date(ms).toISOString();
}
