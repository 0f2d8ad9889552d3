/**
 * The address other nodes of a cluster reach a listener of this node at (docs/cluster.md
 * "Addresses"). A listener bound to a wildcard (0.0.0.0, ::) has no address to give: a
 * peer told `http://0.0.0.0:8080` connects to itself. The advertised host is
 * `advertiseHost` when set, else the bound host unless it is a wildcard, else the
 * machine's first address that is not loopback (IPv4 first), else loopback.
 */
import { networkInterfaces } from 'node:os';

const WILDCARDS = new Set(['0.0.0.0', '[::]', '[0:0:0:0:0:0:0:0]']);

/** `boundUrl` (http://host:port, as the listener reports it) with the host peers can reach it at. */
export function reachableUrl(boundUrl: string, advertiseHost?: string, interfaces = networkInterfaces): string {
  const url = new URL(boundUrl);
  const host = advertiseHost ?? (WILDCARDS.has(url.hostname) ? externalAddress(interfaces) : null);
  if (host === null) return boundUrl;
  url.hostname = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  // URL keeps a trailing slash on a bare origin; the listeners' URLs have none.
  return url.toString().replace(/\/$/, '');
}

/** The machine's first non-loopback address, IPv4 before IPv6 (link-local IPv6 left out: it needs a zone); loopback when it has none. */
function externalAddress(interfaces: typeof networkInterfaces): string {
  const all = Object.values(interfaces()).flatMap((list) => list ?? []);
  const v4 = all.find((a) => a.family === 'IPv4' && !a.internal);
  if (v4) return v4.address;
  const v6 = all.find((a) => a.family === 'IPv6' && !a.internal && !a.address.toLowerCase().startsWith('fe80:'));
  return v6 ? v6.address : '127.0.0.1';
}
