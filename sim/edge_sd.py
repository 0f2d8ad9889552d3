"""An "SD card" for the simulated camera: edge storage that a recorder back-fills from.

One always-running camera core (test source + clock overlay + H.264 encoder) feeds
both the live mount and the card, so the card holds the very frames (and GOP grid)
the live stream carried, and keeps recording while no client is connected (the
network dropped, the recorder was down):

  core ─ tee ─► splitmuxsink: <dir>/rec/part-NNNNN.mp4, PART_SECONDS each; a closed
         │      part is hard-linked into <dir>/card/ (only complete files are read)
         └──► appsink → the appsrc of every live client's media (/sdlive)

Replay mounts (ONVIF, `Require: onvif-replay`, `Range: clock=`, `Rate-Control: no`):
  /edge         the card as one timeline (splitmuxsrc over card/*.mp4): a clock time
                maps to npt = clock - card start (the wall clock of the card's first
                frame, measured where the overlay is drawn);
  /edge-skewed  serves the same video but reports times an hour late in its replies
                (a camera whose clock is wrong): the recorder must refuse it.
GStreamer hands clock ranges as nanoseconds since 1900 (NTP era).
"""
import os
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GObject, Gst, GstRtsp, GstRtspServer  # noqa: E402

PART_SECONDS = 4
NTP_UNIX_OFFSET_S = 2208988800  # seconds from 1900-01-01 to 1970-01-01
SKEW_NS = 3600 * Gst.SECOND


class Card:
    """The recording core and what it knows about the card's timeline."""

    def __init__(self, a, directory):
        self.rec_dir = os.path.join(directory, "rec")
        self.card_dir = os.path.join(directory, "card")
        os.makedirs(self.rec_dir, exist_ok=True)
        os.makedirs(self.card_dir, exist_ok=True)
        self.start_unix_ns = None  # wall clock of the card's first frame
        self.sources = []  # [appsrc, waiting_for_keyframe]
        self.caps = None
        self.pipeline = Gst.parse_launch(
            f"videotestsrc is-live=true pattern=ball ! "
            f"video/x-raw,width={a.width},height={a.height},framerate={a.fps}/1,format=I420 ! "
            f"clockoverlay name=overlay time-format=\"%H:%M:%S\" halignment=left valignment=top "
            f"font-desc=\"Sans Bold {max(12, a.height // 7)}\" shaded-background=true ! "
            f"videoconvert ! video/x-raw,format=I420 ! "
            f"x264enc tune=zerolatency sliced-threads=false speed-preset=superfast "
            f"bitrate={a.bitrate} key-int-max={a.gop} ! video/x-h264,profile=main ! "
            f"h264parse config-interval=-1 ! tee name=t "
            f"t. ! queue ! splitmuxsink name=sd location={self.rec_dir}/part-%05d.mp4 "
            f"max-size-time={PART_SECONDS * Gst.SECOND} "
            f"t. ! queue ! appsink name=live emit-signals=true sync=false max-buffers=100 drop=true"
        )
        self.pipeline.get_by_name("overlay").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._first_frame)
        self.pipeline.get_by_name("live").connect("new-sample", self._on_sample)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::element", self._on_element_message)
        self.pipeline.set_state(Gst.State.PLAYING)

    def _first_frame(self, _pad, _info):
        # The overlay of the first frame shows this instant; npt 0 of the card is it.
        self.start_unix_ns = time.time_ns()
        return Gst.PadProbeReturn.REMOVE

    def _on_element_message(self, _bus, msg):
        s = msg.get_structure()
        if s is None or s.get_name() != "splitmuxsink-fragment-closed":
            return
        src = s.get_string("location")
        dst = os.path.join(self.card_dir, os.path.basename(src))
        if not os.path.exists(dst):
            os.link(src, dst)

    def _on_sample(self, sink):
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        self.caps = sample.get_caps()
        buf = sample.get_buffer()
        key = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
        for entry in list(self.sources):
            src, waiting = entry
            if waiting and not key:
                continue  # a new client starts at a keyframe
            entry[1] = False
            # A real copy: the boxed copy of a GstBuffer is only a new reference, and
            # the card's muxer needs the timestamps we clear here.
            out = buf.copy_deep()
            out.pts = Gst.CLOCK_TIME_NONE  # the client's appsrc stamps its own running time
            out.dts = Gst.CLOCK_TIME_NONE
            src.emit("push-buffer", out)
        return Gst.FlowReturn.OK

    def attach_live(self, media):
        src = media.get_element().get_by_name("src")
        if self.caps is not None:
            src.set_property("caps", self.caps)
        entry = [src, True]
        self.sources.append(entry)
        media.connect("unprepared", lambda _m: entry in self.sources and self.sources.remove(entry))

    def start_ntp_ns(self):
        if self.start_unix_ns is None:
            return None
        return self.start_unix_ns + NTP_UNIX_OFFSET_S * Gst.SECOND


CARD = None  # the one card of this process (set by add_mounts)


def _clock_to_npt(rng, skew_ns):
    ok, lo, hi = GstRtsp.rtsp_range_get_times(rng)
    start = CARD.start_ntp_ns()
    if not ok or start is None:
        return False
    out = GstRtsp.RTSPTimeRange()
    out.unit = GstRtsp.RTSPRangeUnit.NPT
    for src_ns, field in ((lo, "min"), (hi, "max")):
        t = getattr(out, field)
        if src_ns == Gst.CLOCK_TIME_NONE:
            t.type = GstRtsp.RTSPTimeType.END
        else:
            t.type = GstRtsp.RTSPTimeType.SECONDS
            t.seconds = max(0.0, (src_ns - start - skew_ns) / Gst.SECOND)
    return out


class ReplayMedia(GstRtspServer.RTSPOnvifMedia):
    skew_ns = 0

    def do_convert_range(self, rng, unit):
        start = CARD.start_ntp_ns()
        if start is None:
            return False
        if rng.unit == unit:
            return True
        if rng.unit == GstRtsp.RTSPRangeUnit.CLOCK and unit == GstRtsp.RTSPRangeUnit.NPT:
            out = _clock_to_npt(rng, 0)
            if not out:
                return False
            rng.unit, rng.min.type, rng.min.seconds = out.unit, out.min.type, out.min.seconds
            rng.max.type, rng.max.seconds = out.max.type, out.max.seconds
            return True
        if rng.unit == GstRtsp.RTSPRangeUnit.NPT and unit == GstRtsp.RTSPRangeUnit.CLOCK:
            ok, lo, hi = GstRtsp.rtsp_range_get_times(rng)
            if not ok:
                return False
            _set_clock(rng.min, rng.min2, lo, start + self.skew_ns)
            _set_clock(rng.max, rng.max2, hi, start + self.skew_ns)
            rng.unit = GstRtsp.RTSPRangeUnit.CLOCK
            return True
        return False


class SkewedReplayMedia(ReplayMedia):
    skew_ns = SKEW_NS


GObject.type_register(ReplayMedia)
GObject.type_register(SkewedReplayMedia)


def _set_clock(t, t2, npt_ns, base_ntp_ns):
    if npt_ns == Gst.CLOCK_TIME_NONE:
        t.type = GstRtsp.RTSPTimeType.END
        return
    unix_s = (base_ntp_ns + npt_ns) / Gst.SECOND - NTP_UNIX_OFFSET_S
    tm = time.gmtime(int(unix_s))
    t.type = GstRtsp.RTSPTimeType.UTC
    t.seconds = tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec + (unix_s - int(unix_s))
    t2.year, t2.month, t2.day = tm.tm_year, tm.tm_mon, tm.tm_mday


def _replay_factory(media_type):
    f = GstRtspServer.RTSPOnvifMediaFactory()
    f.set_replay_support(True)
    f.set_media_gtype(media_type.__gtype__)
    f.set_launch(
        f"( splitmuxsrc name=card location=\"{CARD.card_dir}/*.mp4\" ! h264parse ! "
        f"rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    f.set_shared(False)
    return f


def add_mounts(mounts, a, directory):
    """Starts the card's core and adds /sdlive, /edge and /edge-skewed."""
    global CARD
    CARD = Card(a, directory)
    live = GstRtspServer.RTSPMediaFactory()
    live.set_launch(
        "( appsrc name=src is-live=true format=time do-timestamp=true ! h264parse ! "
        "rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    # One media per client: each starts at a keyframe and goes when its client goes.
    live.set_shared(False)
    live.connect("media-configure", lambda _f, media: CARD.attach_live(media))
    mounts.add_factory("/sdlive", live)
    mounts.add_factory("/edge", _replay_factory(ReplayMedia))
    mounts.add_factory("/edge-skewed", _replay_factory(SkewedReplayMedia))
