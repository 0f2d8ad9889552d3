"""An RTSP mount carrying MPEG-PS over RTP (`MP2P/90000`, payload type 96), as
GB28181-style cameras send it. Debian's GStreamer 1.22 has no rtpmp2ppay, so the PS
from mpegpsmux is taken at an appsink and cut into RTP packets of at most
MAX_PAYLOAD bytes that an appsrc named pay0 sends (the RTP timestamp is the buffer's
running time at 90 kHz; the marker bit ends each muxer buffer).
"""
import random
import struct

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
