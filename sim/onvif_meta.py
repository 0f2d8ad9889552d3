"""ONVIF metadata for the simulated camera: a data track of ready RTP packets, one
ONVIF XML document (tt:MetadataStream) per packet, pushed through an appsrc named
pay1 (Debian's GStreamer 1.22 has no rtponvifmetadatapay).

The content is a function of the wall clock so tests can predict it:
  - a document every PERIOD_MS, UtcTime = the wall clock when it is sent;
  - VideoAnalytics/Frame with one Object of class "Human" when the UTC second is
    even, "Vehicle" when it is odd;
  - an Event NotificationMessage, topic tns1:RuleEngine/LineDetector/Crossed with
    Rule "Gate", in the first document of every UTC second divisible by 5.
The RTP timestamp is the pipeline running time at 90 kHz, the same clock the video's
RTP timestamps and the server's RTCP sender reports use, so a client can put the
documents on the video's timeline.

The "bad" variant (for the bad-input test) also sends, every second, one malformed
document, one packet that is not XML at all, and a burst of FLOOD_BURST documents.
"""
import random
import struct
from datetime import datetime, timezone

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

PERIOD_MS = 250
FLOOD_BURST = 400
CAPS = (
    "application/x-rtp,media=application,clock-rate=90000,"
    "encoding-name=VND.ONVIF.METADATA,payload=107"
)


def appsrc_launch():
    return f'appsrc name=pay1 is-live=true format=time do-timestamp=false caps="{CAPS}"'


def object_class(utc_second):
    return "Human" if utc_second % 2 == 0 else "Vehicle"


def document(now):
    """One tt:MetadataStream for the wall-clock instant `now` (aware datetime)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    sec = int(now.timestamp())
    cls = object_class(sec)
    event = ""
    if sec % 5 == 0 and now.microsecond < PERIOD_MS * 1000:
        event = (
            "<tt:Event><wsnt:NotificationMessage>"
            '<wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">'
            "tns1:RuleEngine/LineDetector/Crossed</wsnt:Topic>"
            f'<wsnt:Message><tt:Message UtcTime="{stamp}" PropertyOperation="Changed">'
            '<tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" Value="vsc0"/>'
            '<tt:SimpleItem Name="Rule" Value="Gate"/></tt:Source>'
            '<tt:Data><tt:SimpleItem Name="ObjectId" Value="1"/></tt:Data>'
            "</tt:Message></wsnt:Message></wsnt:NotificationMessage></tt:Event>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<tt:MetadataStream xmlns:tt="http://www.onvif.org/ver10/schema" '
        'xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" '
        'xmlns:tns1="http://www.onvif.org/ver10/topics">'
        f'<tt:VideoAnalytics><tt:Frame UtcTime="{stamp}">'
        '<tt:Object ObjectId="1"><tt:Appearance>'
        '<tt:Shape><tt:BoundingBox left="0.1" top="0.2" right="0.3" bottom="0.6"/></tt:Shape>'
        f'<tt:Class><tt:Type Likelihood="0.9">{cls}</tt:Type></tt:Class>'
        "</tt:Appearance></tt:Object></tt:Frame></tt:VideoAnalytics>"
        f"{event}</tt:MetadataStream>"
    ).encode()


KLV_UL = bytes.fromhex("060e2b34020b01010e01030101000000")  # MISB ST 0601 UAS Datalink


def klv_launch():
    return "appsrc name=klvsrc is-live=true format=time do-timestamp=true caps=meta/x-klv,parsed=true ! rtpklvpay name=pay2 pt=108"


def klv_packet(now):
    """One MISB ST 0601 local set: tag 2 (UNIX time, microseconds, 8 bytes)."""
    value = bytes([2, 8]) + int(now.timestamp() * 1_000_000).to_bytes(8, "big")
    return KLV_UL + bytes([len(value)]) + value


class KlvPusher:
    """Pushes one KLV packet every 500 ms into the appsrc `klvsrc` (rtpklvpay times it)."""

    def __init__(self, media):
        self.media = media
        self.src = media.get_element().get_by_name("klvsrc")
        self.timer = GLib.timeout_add(500, self.tick)
        media.connect("unprepared", self.stop)

    def stop(self, *_):
        if self.timer is not None:
            GLib.source_remove(self.timer)
            self.timer = None

    def tick(self):
        if self.media.get_element().get_clock() is None:
            return True
        self.src.emit("push-buffer", Gst.Buffer.new_wrapped(klv_packet(datetime.now(timezone.utc))))
        return True


class MetadataPusher:
    """Pushes RTP packets into the appsrc of one prepared media until it is unprepared."""

    def __init__(self, media, bad):
        self.media = media
        self.bad = bad
        self.seq = random.randint(0, 0xFFFF)
        self.ssrc = random.randint(1, 0xFFFFFFFF)
        self.ts_base = random.randint(0, 0xFFFFFFFF)
        self.last_bad_second = None
        self.src = media.get_element().get_by_name("pay1")
        self.timer = GLib.timeout_add(PERIOD_MS, self.tick)
        media.connect("unprepared", self.stop)

    def stop(self, *_):
        if self.timer is not None:
            GLib.source_remove(self.timer)
            self.timer = None

    def push(self, payload, running_ns, marker=True):
        ts = (self.ts_base + running_ns * 90000 // Gst.SECOND) & 0xFFFFFFFF
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 107, self.seq, ts, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        buf = Gst.Buffer.new_wrapped(header + payload)
        buf.pts = running_ns
        buf.dts = running_ns
        return self.src.emit("push-buffer", buf)

    def tick(self):
        pipeline = self.media.get_element()
        clock = pipeline.get_clock()
        if clock is None:
            return True  # not playing yet
        running_ns = clock.get_time() - pipeline.get_base_time()
        if running_ns < 0:
            return True
        now = datetime.now(timezone.utc)
        self.push(document(now), running_ns)
        sec = int(now.timestamp())
        if self.bad and sec != self.last_bad_second:
            self.last_bad_second = sec
            self.push(b"<tt:MetadataStream><tt:VideoAnalytics><tt:Frame UtcTime=", running_ns)
            self.push(bytes(range(256)), running_ns)
            for _ in range(FLOOD_BURST):
                self.push(document(now), running_ns)
        return True
