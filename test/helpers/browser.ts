/**
 * Debian's headless Chromium through playwright-core for the browser tests: one
 * profile in a temp dir per test, closed by the test's teardown (also when it fails).
 */
import type { ExecutionContext } from 'ava';
import { chromium, type BrowserContext } from 'playwright-core';
import { tempDir } from './recorder.ts';

/** The flags every browser test runs with: no sandbox (root in CI), no GPU, nothing fetched from the network, autoplay. */
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

export async function launchChromium(
  t: ExecutionContext,
  options: { viewport?: { width: number; height: number }; timezoneId?: string } = {},
): Promise<BrowserContext> {
  const profile = await tempDir(t, 'chromium-');
  const browser = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', args: ARGS, ...options });
  t.teardown(() => browser.close());
  return browser;
}
