/**
 * lib/advertise.ts: the URL a peer is given for a listener bound to a wildcard is the
 * advertised host or the machine's first address that is not loopback, never 0.0.0.0.
 */
import test from 'ava';
import type { networkInterfaces } from 'node:os';
import { reachableUrl } from '../../lib/advertise.ts';

type Nics = ReturnType<typeof networkInterfaces>;
const nic = (address: string, family: 'IPv4' | 'IPv6', internal: boolean): NonNullable<Nics[string]>[number] =>
  family === 'IPv4'
    ? { address, family, internal, netmask: '255.255.255.0', mac: '00:00:00:00:00:00', cidr: null }
    : { address, family, internal, netmask: 'ffff:ffff:ffff:ffff::', mac: '00:00:00:00:00:00', cidr: null, scopeid: 0 };
const machine = (nics: Nics) => (): Nics => nics;

test('a listener on one address is announced as it is; the advertised host replaces any', (t) => {
  const nics = machine({ lo: [nic('127.0.0.1', 'IPv4', true)], eth0: [nic('10.0.0.5', 'IPv4', false)] });
  t.is(reachableUrl('http://127.0.0.1:8080', undefined, nics), 'http://127.0.0.1:8080');
  t.is(reachableUrl('http://[::1]:9000', undefined, nics), 'http://[::1]:9000');
  t.is(reachableUrl('http://10.0.0.5:8080', 'nvr-2.site.example', nics), 'http://nvr-2.site.example:8080');
  t.is(reachableUrl('http://0.0.0.0:8080', 'fd00::7', nics), 'http://[fd00::7]:8080');
});

test('a listener on every interface is announced at the first address that is not loopback, IPv4 first', (t) => {
  const both = machine({
    lo: [nic('127.0.0.1', 'IPv4', true), nic('::1', 'IPv6', true)],
    eth0: [nic('fe80::1', 'IPv6', false), nic('fd00::5', 'IPv6', false)],
    eth1: [nic('192.168.1.20', 'IPv4', false)],
  });
  t.is(reachableUrl('http://0.0.0.0:8080', undefined, both), 'http://192.168.1.20:8080');
  t.is(reachableUrl('http://[::]:9000', undefined, both), 'http://192.168.1.20:9000');
  const v6 = machine({ lo: [nic('127.0.0.1', 'IPv4', true)], eth0: [nic('fe80::1', 'IPv6', false), nic('fd00::5', 'IPv6', false)] });
  t.is(reachableUrl('http://0.0.0.0:8080', undefined, v6), 'http://[fd00::5]:8080', 'link-local left out');
  t.is(reachableUrl('http://0.0.0.0:8080', undefined, machine({ lo: [nic('127.0.0.1', 'IPv4', true)] })), 'http://127.0.0.1:8080');
});
