/**
 * `--demo`: starts a simulated camera (GStreamer RTSP server, sim/camera.py) and adds
 * it as a transient camera "demo", so a new user sees recording, search and download
 * within a minute without any hardware.
 */
import type { Logger } from '../lib/log.ts';
import type { RecorderNode } from '../node.ts';
import { SimCamera } from './camera.ts';

export async function startDemoCamera(node: RecorderNode, log: Logger): Promise<() => Promise<void>> {
  const sim = await SimCamera.start({ width: 640, height: 360 });
  await node.service.putCamera({ id: 'demo', name: 'Demo camera (synthetic)', streams: { main: sim.url('h264aac') } }, { transient: true });
  log.info(
    {
      camera: 'demo',
      rtsp: sim.url('h264aac'),
      try: `${node.httpUrl}/api/recordings?camera=demo&from=${new Date(Date.now() - 3600_000).toISOString()}&to=${new Date(Date.now() + 3600_000).toISOString()}`,
    },
    'demo camera recording',
  );
  return () => sim.stop();
}
