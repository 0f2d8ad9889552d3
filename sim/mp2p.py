#!/usr/bin/python3
"""An RTSP mount carrying MPEG-PS over RTP (`MP2P/90000`, payload type 96), as
GB28181-style cameras send it. Debian's GStreamer 1.22 has no rtpmp2ppay, so the PS
from mpegpsmux is taken at an appsink and cut into RTP packets of at most
MAX_PAYLOAD bytes that an appsrc named pay0 sends (the RTP timestamp is the buffer's
running time at 90 kHz; the marker bit ends each muxer buffer). sim/camera.py serves
it as /h264ps (video only).

Run as a script, an MP2P camera with audio, its program stream written here (see
PsCamera and MOUNTS below): `/usr/bin/python3 sim/mp2p.py --port N`; prints
"READY <port>", exits on SIGTERM/SIGINT or when stdin reaches EOF. `--auth
basic|digest` (with --user/--password) makes every mount ask for that login, as
Hikvision cameras ask for Digest.
"""
import os
import random
import struct
import threading

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

CAPS = "application/x-rtp,media=video,clock-rate=90000,encoding-name=MP2P,payload=96"
MAX_PAYLOAD = 1400


def launch(h264_encoder):
    """The pipeline: H.264 (from the camera's encoder chain, no payloader) muxed to PS."""
    return (
        f"{h264_encoder} ! h264parse config-interval=-1 ! mpegpsmux ! "
        f"appsink name=psout emit-signals=true sync=false max-buffers=200 drop=false "
        f'appsrc name=pay0 is-live=true format=time do-timestamp=false caps="{CAPS}"'
    )


class Mp2pPayloader:
    """Moves PS buffers from the appsink to the appsrc as RTP packets, for one media."""

    def __init__(self, media):
        element = media.get_element()
        self.src = element.get_by_name("pay0")
        self.sink = element.get_by_name("psout")
        self.seq = random.randint(0, 0xFFFF)
        self.ssrc = random.randint(1, 0xFFFFFFFF)
        self.ts_base = random.randint(0, 0xFFFFFFFF)
        self.sink.connect("new-sample", self.on_sample)

    def on_sample(self, sink):
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            return Gst.FlowReturn.ERROR
        data = bytes(info.data)
        buf.unmap(info)
        pts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else 0
        ts = (self.ts_base + pts * 90000 // Gst.SECOND) & 0xFFFFFFFF
        for at in range(0, len(data), MAX_PAYLOAD):
            last = at + MAX_PAYLOAD >= len(data)
            header = struct.pack("!BBHII", 0x80, (0x80 if last else 0) | 96, self.seq, ts, self.ssrc)
            self.seq = (self.seq + 1) & 0xFFFF
            out = Gst.Buffer.new_wrapped(header + data[at : at + MAX_PAYLOAD])
            out.pts = pts
            out.dts = pts
            self.src.emit("push-buffer", out)
        return Gst.FlowReturn.OK


# ---------------------------------------------------------------------------
# A GB28181 / Hikvision-style MP2P camera with audio, whose program stream we write
# ourselves (mpegpsmux cannot write PSM type 0x90 for G.711, always starts its PTS
# near 0 and writes a PSM only now and then). Run as a script: one RTSP server with
# one mount per variant (see MOUNTS). Each client gets its own pipeline (not shared),
# so its stream starts where the variant says.
#
# Layout, as those cameras send it: each video access unit is one "frame" of
# pack header (+ system header + PSM before an I-frame) + PES packets (PTS on the
# first), each audio frame is pack header + one PES; a frame's bytes go out as RTP
# packets of at most MAX_PAYLOAD bytes, marker on the last, timestamp = the PTS.
# ---------------------------------------------------------------------------

TS_MOD = 1 << 33
PES_MAX = 65000
STREAM_TYPES = {"h264": 0x1B, "h265": 0x24, "aac": 0x0F, "alaw": 0x90}


def _crc32_mpeg(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def _ts(prefix, v):
    v %= TS_MOD
    return bytes(
        [
            (prefix << 4) | (((v >> 30) & 7) << 1) | 1,
            (v >> 22) & 0xFF,
            (((v >> 15) & 0x7F) << 1) | 1,
            (v >> 7) & 0xFF,
            ((v & 0x7F) << 1) | 1,
        ]
    )


def pack_header(scr):
    scr %= TS_MOD
    rate = 50000  # units of 50 bytes/s
    return bytes(
        [
            0, 0, 1, 0xBA,
            0x44 | (((scr >> 30) & 7) << 3) | ((scr >> 28) & 3),
            (scr >> 20) & 0xFF,
            (((scr >> 15) & 0x1F) << 3) | 0x04 | ((scr >> 13) & 3),
            (scr >> 5) & 0xFF,
            ((scr & 0x1F) << 3) | 0x04,
            0x01,
            (rate >> 14) & 0xFF,
            (rate >> 6) & 0xFF,
            ((rate & 0x3F) << 2) | 0x03,
            0xF8,
        ]
    )


def system_header(has_audio):
    rate = 50000
    body = bytes([0x80 | ((rate >> 15) & 0x7F), (rate >> 7) & 0xFF, ((rate & 0x7F) << 1) | 1])
    body += bytes([(1 if has_audio else 0) << 2, 0xE1, 0x7F])
    body += bytes([0xE0, 0xE0 | (400 >> 8), 400 & 0xFF])  # video: 400 × 1024 bytes
    if has_audio:
        body += bytes([0xC0, 0xC0, 32])  # audio: 32 × 128 bytes
    return bytes([0, 0, 1, 0xBB]) + len(body).to_bytes(2, "big") + body


def psm(entries):
    """entries: (stream_type, stream_id) pairs."""
    es_map = b"".join(bytes([t, i, 0, 0]) for t, i in entries)
    body = bytes([0xE0, 0xFF, 0, 0]) + len(es_map).to_bytes(2, "big") + es_map
    head = bytes([0, 0, 1, 0xBC]) + (len(body) + 4).to_bytes(2, "big")
    return head + body + _crc32_mpeg(body).to_bytes(4, "big")


def pes(stream_id, payload, pts, dts=None):
    out = []
    for at in range(0, max(len(payload), 1), PES_MAX):
        part = payload[at : at + PES_MAX]
        if at == 0 and pts is not None and dts is not None and dts != pts:
            opt = bytes([0x80, 0xC0, 10]) + _ts(3, pts) + _ts(1, dts)
        elif at == 0 and pts is not None:
            opt = bytes([0x80, 0x80, 5]) + _ts(2, pts)
        else:
            opt = bytes([0x80, 0, 0])
        out.append(bytes([0, 0, 1, stream_id]) + (len(opt) + len(part)).to_bytes(2, "big") + opt + part)
    return b"".join(out)


def es_launch(a, video, audio):
    """Video (and audio) encoder chains ending in appsinks `vout` / `aout`."""
    src = (
        f"videotestsrc is-live=true pattern={a.pattern} ! "
        f"video/x-raw,width={a.width},height={a.height},framerate={a.fps}/1,format=I420 ! "
        f"clockoverlay time-format=\"%H:%M:%S\" halignment=left valignment=top "
        f"font-desc=\"Sans Bold {max(12, a.height // 7)}\" shaded-background=true ! "
        f"videoconvert ! video/x-raw,format=I420"
    )
    if video == "h264":
        enc = (
            f"x264enc tune=zerolatency sliced-threads=false speed-preset=superfast bitrate={a.bitrate} "
            f"key-int-max={a.gop} ! video/x-h264,profile=main ! h264parse config-interval=-1 ! "
            f"video/x-h264,stream-format=byte-stream,alignment=au"
        )
    else:
        enc = (
            f"x265enc tune=zerolatency speed-preset=superfast bitrate={a.bitrate} key-int-max={a.gop} ! "
            f"video/x-h265,profile=main ! h265parse config-interval=-1 ! "
            f"video/x-h265,stream-format=byte-stream,alignment=au"
        )
    sink = "emit-signals=true sync=false max-buffers=500 drop=false"
    out = f"{src} ! {enc} ! appsink name=vout {sink}"
    if audio == "aac":
        out += (
            " audiotestsrc is-live=true wave=sine freq=440 volume=0.2 ! audio/x-raw,rate=16000,channels=1 ! "
            "audioconvert ! avenc_aac bitrate=32000 ! aacparse ! audio/mpeg,mpegversion=4,stream-format=adts ! "
            f"appsink name=aout {sink}"
        )
    elif audio == "alaw":
        out += (
            " audiotestsrc is-live=true wave=sine freq=440 volume=0.2 samplesperbuffer=160 ! audioconvert ! "
            f"audio/x-raw,format=S16LE,rate=8000,channels=1 ! alawenc ! appsink name=aout {sink}"
        )
    return f'{out} appsrc name=pay0 is-live=true format=time do-timestamp=false caps="{CAPS}"'


class PsCamera:
    """Writes the program stream of one client's pipeline and sends it as MP2P RTP."""

    def __init__(self, media, video, audio, midgop, wrap_after, gop_seconds):
        element = media.get_element()
        self.src = element.get_by_name("pay0")
        self.video = video
        self.audio = audio
        self.lock = threading.Lock()
        self.seq = random.randint(0, 0xFFFF)
        self.ssrc = random.randint(1, 0xFFFFFFFF)
        # PTS of running time 0: just before a 33-bit wrap, or anywhere like a real camera.
        self.offset = (TS_MOD - wrap_after * 90000) if wrap_after is not None else random.randint(0, 1 << 32)
        # Joined mid-GOP: nothing is sent before half a GOP has gone by.
        self.skip_until = int(gop_seconds * Gst.SECOND / 2) if midgop else 0
        entries = [(STREAM_TYPES[video], 0xE0)]
        if audio != "none":
            entries.append((STREAM_TYPES[audio], 0xC0))
        self.psm = psm(entries)
        self.sys = system_header(audio != "none")
        element.get_by_name("vout").connect("new-sample", self.on_video)
        if audio != "none":
            element.get_by_name("aout").connect("new-sample", self.on_audio)

    def pull(self, sink):
        """The next buffer's bytes, PTS and DTS as running time (x264enc stamps in a segment 1000 h on)."""
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer()
        seg = sample.get_segment()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            return None
        data = bytes(info.data)
        buf.unmap(info)
        pts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else 0
        dts = buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else pts
        pts = max(0, seg.to_running_time(Gst.Format.TIME, pts))
        dts = max(0, seg.to_running_time(Gst.Format.TIME, dts)) if dts <= pts else pts
        return buf, data, pts, dts

    def ts90(self, t):
        return (self.offset + t * 90000 // Gst.SECOND) % TS_MOD

    def on_video(self, sink):
        got = self.pull(sink)
        if got is None:
            return Gst.FlowReturn.ERROR
        buf, data, pts, dts = got
        if pts < self.skip_until:
            return Gst.FlowReturn.OK
        key = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
        p90, d90 = self.ts90(pts), self.ts90(dts)
        frame = pack_header(d90 - 3600) + (self.sys + self.psm if key else b"") + pes(0xE0, data, p90, d90)
        self.send(frame, p90, pts)
        return Gst.FlowReturn.OK

    def on_audio(self, sink):
        got = self.pull(sink)
        if got is None:
            return Gst.FlowReturn.ERROR
        _buf, data, pts, _dts = got
        if pts < self.skip_until:
            return Gst.FlowReturn.OK
        p90 = self.ts90(pts)
        self.send(pack_header(p90 - 3600) + pes(0xC0, data, p90), p90, pts)
        return Gst.FlowReturn.OK

    def send(self, frame, ts90, pts):
        with self.lock:
            for at in range(0, len(frame), MAX_PAYLOAD):
                last = at + MAX_PAYLOAD >= len(frame)
                header = struct.pack("!BBHII", 0x80, (0x80 if last else 0) | 96, self.seq, ts90 & 0xFFFFFFFF, self.ssrc)
                self.seq = (self.seq + 1) & 0xFFFF
                out = Gst.Buffer.new_wrapped(header + frame[at : at + MAX_PAYLOAD])
                out.pts = pts
                out.dts = pts
                self.src.emit("push-buffer", out)


# MOUNTS: /<video><audio>[-midgop][-wrap][-udp], video h264|h265, audio aac|alaw|none
# ("" for none): e.g. /h264aac (starts at an I-frame), /h264alaw (PSM type 0x90),
# /h264aac-midgop (the client's first bytes are mid-GOP, before any PSM), /h264aac-wrap
# (PTS 2^33 is passed WRAP_AFTER seconds after the client connects), /h265aac;
# `-udp`: RTP over UDP only (a SETUP asking for TCP is answered 461).
WRAP_AFTER = 8


def mounts():
    for video in ("h264", "h265"):
        for audio in ("aac", "alaw", "none"):
            for midgop in (False, True):
                for wrap in (False, True):
                    for udp in (False, True):
                        name = (
                            f"/{video}{'' if audio == 'none' else audio}{'-midgop' if midgop else ''}"
                            f"{'-wrap' if wrap else ''}{'-udp' if udp else ''}"
                        )
                        yield name, video, audio, midgop, wrap, udp


def main():
    import argparse
    import signal
    import sys

    os.environ["TZ"] = "UTC"
    gi.require_version("GstRtspServer", "1.0")
    gi.require_version("GstRtsp", "1.0")
    from gi.repository import GLib, GstRtsp, GstRtspServer
    from rtsp_auth import setup_auth  # beside this script

    p = argparse.ArgumentParser(description="MP2P (MPEG-PS over RTP) camera with audio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--gop", type=int, default=50)
    p.add_argument("--bitrate", type=int, default=300)
    p.add_argument("--pattern", default="ball", help="videotestsrc pattern (snow: noise that uses the whole bitrate)")
    p.add_argument("--auth", choices=["basic", "digest"], help="every mount asks for these credentials")
    p.add_argument("--user", default="user")
    p.add_argument("--password", default="secret")
    a = p.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(a.host)
    server.set_service(str(a.port))
    points = server.get_mount_points()
    permissions = setup_auth(server, a)
    for name, video, audio, midgop, wrap, udp in mounts():
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(f"( {es_launch(a, video, audio)} )")
        f.set_shared(False)
        f.set_latency(50)
        if udp:
            f.set_protocols(GstRtsp.RTSPLowerTrans.UDP)
        if permissions is not None:
            f.set_permissions(permissions)
        f.connect(
            "media-configure",
            lambda _f, media, v=video, au=audio, m=midgop, w=wrap: PsCamera(media, v, au, m, WRAP_AFTER if w else None, a.gop / a.fps),
        )
        points.add_factory(name, f)
    if server.attach(None) == 0:
        print(f"cannot listen on {a.host}:{a.port}", file=sys.stderr, flush=True)
        sys.exit(1)
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, lambda *_: (loop.quit(), False)[1])

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except Exception:
            pass
        GLib.idle_add(loop.quit)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"READY {a.port}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
