#!/usr/bin/python3
"""A simulated IP camera: GStreamer's RTSP server on loopback.

Mounts (each shared: one encoder however many clients):
  /h264aac  H.264 main + AAC mono 48 kHz
  /h264     H.264 only
  /h265aac  H.265 main + AAC
  /h264ps   H.264 in MPEG-PS over RTP (MP2P/90000, GB28181 style; sim/mp2p.py)
  /file     a pre-encoded H.264 MP4 served without encoding, once (--file)
  /sdlive, /edge, /edge-skewed  live video recorded to an SD card and its ONVIF
            replay (--sd DIR; sim/edge_sd.py)
  /h264meta     H.264 + an ONVIF metadata data track (sim/onvif_meta.py)
  /h264metabad  the same plus malformed packets and a flood every second
  /h264metaklv  H.264 + the ONVIF metadata track + a KLV track (MISB ST 0601 time)
  /h264pcma     H.264 + G.711 A-law 8 kHz mono (RTP payload type 8)
  /h264pcmu     H.264 + G.711 µ-law 8 kHz mono (RTP payload type 0)
  /h264pcmasilent  H.264 + G.711 A-law announced in the SDP, never sent
  /h264g722     H.264 + G.722 16 kHz mono (RTP payload type 9, 8000 Hz RTP clock)
  /h264g726     H.264 + G.726 32 kbit/s 8 kHz mono (G726-32, RFC 3551 packing)
  /h264opus     H.264 + Opus 48 kHz mono (OPUS/48000/2)
  /h264mp3      H.264 + MP3 44.1 kHz mono (MPA, RTP payload type 14)
  /h264bframes  H.264 main with 2 B-frames between references (no zerolatency tune)
  /mjpeg        Motion JPEG (RTP payload type 26)
  /h264aacudp   H.264 + AAC offering UDP transport only (TCP SETUP gets 461)
--auth basic|digest (with --user/--password) makes every mount ask for credentials.
Video carries the UTC wall clock burnt in (clockoverlay, HH:MM:SS, large, top-left)
so tests can check recorded times against the picture.

Prints "READY <port>" once listening; with --report-holes, "HOLE <mount path> <n>" for
each run of n frames a mount's encoder did not deliver (a camera starved of CPU drops
frames). Exits on SIGTERM/SIGINT and when stdin reaches
EOF, so it never outlives the process that started it (even after SIGKILL).
"""
import argparse
import os
import signal
import sys
import threading

os.environ["TZ"] = "UTC"

import gi  # noqa: E402

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, GObject, Gst, GstRtsp, GstRtspServer  # noqa: E402

# Before any subclass of a GStreamer type is made (LiveMedia): its signals name
# GStreamer's types, which exist only once GStreamer is initialised.
Gst.init(None)

import onvif_meta  # noqa: E402  (beside this script)
from rtsp_auth import setup_auth  # noqa: E402  (beside this script)


def video_source(a):
    return (
        f"videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={a.width},height={a.height},framerate={a.fps}/1,format=I420 ! "
        f"clockoverlay time-format=\"%H:%M:%S\" halignment=left valignment=top "
        f"font-desc=\"Sans Bold {max(12, a.height // 7)}\" shaded-background=true ! "
        f"videoconvert ! video/x-raw,format=I420"
    )


def h264(a):
    return (
        f"{video_source(a)} ! x264enc tune=zerolatency sliced-threads=false speed-preset=superfast "
        f"bitrate={a.bitrate} key-int-max={a.gop} ! video/x-h264,profile=main ! "
        f"rtph264pay name=pay0 pt=96 config-interval=-1"
    )


def h264_bframes(a):
    """H.264 with B-frames: without tune=zerolatency (which disables them), fixed 2 B-frames."""
    return (
        f"{video_source(a)} ! x264enc sliced-threads=false speed-preset=superfast bframes=2 b-adapt=false "
        f"bitrate={a.bitrate} key-int-max={a.gop} ! video/x-h264,profile=main ! "
        f"rtph264pay name=pay0 pt=96 config-interval=-1"
    )


def mjpeg(a):
    return f"{video_source(a)} ! jpegenc quality=50 ! rtpjpegpay name=pay0 pt=26"


def h264_es(a):
    """The H.264 encoder chain without a payloader (for muxing)."""
    return (
        f"{video_source(a)} ! x264enc tune=zerolatency sliced-threads=false speed-preset=superfast "
        f"bitrate={a.bitrate} key-int-max={a.gop} ! video/x-h264,profile=main"
    )


def h265(a):
    return (
        f"{video_source(a)} ! x265enc tune=zerolatency speed-preset=superfast bitrate={a.bitrate} "
        f"key-int-max={a.gop} ! video/x-h265,profile=main ! rtph265pay name=pay0 pt=96 config-interval=-1"
    )


AAC = (
    "audiotestsrc is-live=true wave=sine freq=440 volume=0.2 ! audio/x-raw,rate=48000,channels=1 ! "
    "audioconvert ! avenc_aac bitrate=64000 ! aacparse ! rtpmp4gpay name=pay1 pt=97"
)


def g711(encoder, payloader, pt):
    """G.711 as IP cameras and intercoms send it: 8 kHz mono, 20 ms packets."""
    return (
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.2 samplesperbuffer=160 ! audioconvert ! "
        f"audioresample ! audio/x-raw,format=S16LE,rate=8000,channels=1 ! {encoder} ! {payloader} name=pay1 pt={pt}"
    )


PCMA = g711("alawenc", "rtppcmapay", 8)
PCMU = g711("mulawenc", "rtppcmupay", 0)
# Announced in the SDP but never sent (a camera with its microphone off): identity drops
# every buffer and lets the caps through, so the payloader still describes the track.
# (A valve with drop=true instead hangs the shared media's preparation, and with it the
# whole server.)
PCMA_SILENT = PCMA.replace(
    " ! rtppcmapay", " ! identity drop-probability=1.0 ! rtppcmapay"
)



def tone(caps):
    """A 440 Hz tone in the given raw caps (rate, channels), 20 ms buffers."""
    return (
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.2 samplesperbuffer=320 ! audioconvert ! "
        f"audioresample ! audio/x-raw,format=S16LE,{caps}"
    )


# Other codecs IP cameras and intercoms send (issue 12: each is stored as AAC).
G722 = f"{tone('rate=16000,channels=1')} ! avenc_g722 ! rtpg722pay name=pay1 pt=9"
# force-aal2=false: the RFC 3551 "G726-32" packing cameras announce (AAL2 is the exception).
G726 = f"{tone('rate=8000,channels=1')} ! avenc_g726 bitrate=32000 ! rtpg726pay force-aal2=false name=pay1 pt=97"
OPUS = f"{tone('rate=48000,channels=1')} ! opusenc bitrate=32000 ! rtpopuspay name=pay1 pt=97"
MP3 = f"{tone('rate=44100,channels=1')} ! lamemp3enc target=bitrate bitrate=64 ! mpegaudioparse ! rtpmpapay name=pay1 pt=14"


class AuthMounts:
    """The server's mount points, giving every factory the role the auth token carries."""

    def __init__(self, mounts, permissions):
        self._mounts = mounts
        self._permissions = permissions

    def add_factory(self, path, factory):
        if self._permissions is not None:
            factory.set_permissions(self._permissions)
        self._mounts.add_factory(path, factory)


class LiveMedia(GstRtspServer.RTSPMedia):
    """A live mount's media: the Range of a PLAY never moves it, as on a live camera.

    ffmpeg sends `Range: npt=0.000-` with every PLAY, and GstRTSPServer answers a range
    by a flushing seek of the media to its start. Our media are shared, so every client
    already playing saw its RTP timestamps go back by the media's position (0.24 s when
    a second client came 0.6 s after the first; a whole minute for a client that
    reconnects a minute in), and ffmpeg's muxer squashed the frames in between to one
    tick each ("Non-monotonous DTS"): a PS test segment held 207 frames in 7.999 s.
    An npt range becomes `now-`, which gives the seek no start and no end, so
    GstRTSPMedia does not seek (gst_rtsp_media_seek_trickmode: "no seek needed").
    """

    def do_convert_range(self, rng, unit):
        if rng.unit != GstRtsp.RTSPRangeUnit.NPT or unit != GstRtsp.RTSPRangeUnit.NPT:
            return GstRtspServer.RTSPMedia.do_convert_range(self, rng, unit)
        rng.min.type = GstRtsp.RTSPTimeType.NOW
        rng.max.type = GstRtsp.RTSPTimeType.END
        return True


GObject.type_register(LiveMedia)


class FrameHoles:
    """Counts the video frames a mount's encoder did not deliver (a starved camera).

    A probe on the video payloader's input (one buffer per frame) reads each frame's
    timestamp; a step of more than one frame interval is a hole of (step - 1) frames the
    camera never sent. Each hole is printed as `HOLE <path> <frames>` (stdout), so a test
    can tell the frames the camera dropped from frames a recorder lost.
    """

    def __init__(self, path, fps, media):
        self.path = path
        self.interval = Gst.SECOND // fps
        self.last = None
        pay = media.get_element().get_by_name("pay0")
        if pay is not None:
            pay.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self.on_buffer)

    def on_buffer(self, _pad, info):
        pts = info.get_buffer().pts
        if pts == Gst.CLOCK_TIME_NONE:
            return Gst.PadProbeReturn.OK
        if self.last is not None and pts > self.last:
            missing = round((pts - self.last) / self.interval) - 1
            if missing > 0:
                print(f"HOLE {self.path} {missing}", flush=True)
        self.last = pts if self.last is None else max(self.last, pts)
        return Gst.PadProbeReturn.OK


def live_factory(launch, protocols=None, path=None, fps=None):
    """A shared live mount: one encoder however many clients, never rewound by a PLAY."""
    f = GstRtspServer.RTSPMediaFactory()
    f.set_media_gtype(LiveMedia.__gtype__)
    f.set_launch(f"( {launch} )")
    f.set_shared(True)
    f.set_latency(50)
    if protocols is not None:
        f.set_protocols(protocols)
    if path is not None and fps:
        # Only when asked (--report-holes): a Python callback on every video frame holds
        # the GIL in the streaming thread and delays the video against the audio enough
        # to change what ffmpeg does with the first RTCP report after a connect.
        f.connect("media-configure", lambda _f, media: FrameHoles(path, fps, media))
    return f


def file_factory(path):
    """Serves a pre-encoded file without encoding (benches make it long enough)."""
    f = GstRtspServer.RTSPMediaFactory()
    f.set_media_gtype(LiveMedia.__gtype__)  # a camera: a PLAY does not rewind the file
    f.set_launch(
        f"( filesrc location=\"{path}\" ! qtdemux ! h264parse config-interval=-1 ! "
        f"identity sync=true ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    f.set_shared(True)
    return f


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--gop", type=int, default=50)
    p.add_argument("--bitrate", type=int, default=300)
    p.add_argument("--file")
    p.add_argument("--sd", help="directory of an SD card recorded from /sdlive (sim/edge_sd.py)")
    p.add_argument("--report-holes", action="store_true", help="print HOLE lines for frames a live mount's encoder did not deliver")
    p.add_argument("--auth", choices=["basic", "digest"], help="every mount asks for these credentials")
    p.add_argument("--user", default="user")
    p.add_argument("--password", default="secret")
    a = p.parse_args()

    # ONVIF replay (Require: onvif-replay) needs the ONVIF server's client handling.
    server = GstRtspServer.RTSPOnvifServer() if a.sd else GstRtspServer.RTSPServer()
    server.set_address(a.host)
    server.set_service(str(a.port))
    mounts = AuthMounts(server.get_mount_points(), setup_auth(server, a))

    def add(path, launch, protocols=None):
        mounts.add_factory(path, live_factory(launch, protocols, path, a.fps if a.report_holes else None))

    add("/h264aac", f"{h264(a)} {AAC}")
    add("/h264", h264(a))
    add("/h265aac", f"{h265(a)} {AAC}")
    add("/h264pcma", f"{h264(a)} {PCMA}")
    add("/h264pcmu", f"{h264(a)} {PCMU}")
    add("/h264pcmasilent", f"{h264(a)} {PCMA_SILENT}")
    add("/h264g722", f"{h264(a)} {G722}")
    add("/h264g726", f"{h264(a)} {G726}")
    add("/h264opus", f"{h264(a)} {OPUS}")
    add("/h264mp3", f"{h264(a)} {MP3}")
    add("/h264bframes", h264_bframes(a))
    add("/mjpeg", mjpeg(a))
    add("/h264aacudp", f"{h264(a)} {AAC}", GstRtsp.RTSPLowerTrans.UDP)
    if a.file:
        mounts.add_factory("/file", file_factory(a.file))
    if a.sd:
        import edge_sd  # beside this script

        edge_sd.add_mounts(mounts, a, a.sd)
    for path, bad in (("/h264meta", False), ("/h264metabad", True)):
        f = live_factory(f"{h264(a)} {onvif_meta.appsrc_launch()}")
        f.connect("media-configure", lambda _f, media, bad=bad: onvif_meta.MetadataPusher(media, bad))
        mounts.add_factory(path, f)
    f = live_factory(f"{h264(a)} {onvif_meta.appsrc_launch()} {onvif_meta.klv_launch()}")
    f.connect("media-configure", lambda _f, media: (onvif_meta.MetadataPusher(media, False), onvif_meta.KlvPusher(media)))
    mounts.add_factory("/h264metaklv", f)

    import mp2p  # beside this script

    f = live_factory(mp2p.launch(h264_es(a)))
    f.connect("media-configure", lambda _f, media: mp2p.Mp2pPayloader(media))
    mounts.add_factory("/h264ps", f)

    if server.attach(None) == 0:
        print(f"cannot listen on {a.host}:{a.port}", file=sys.stderr, flush=True)
        sys.exit(1)
    loop = GLib.MainLoop()

    def quit_loop(*_):
        GLib.idle_add(loop.quit)

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, lambda *_: (loop.quit(), False)[1])

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except Exception:
            pass
        quit_loop()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"READY {a.port}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
