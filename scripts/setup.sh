#!/usr/bin/env bash
# Sets up a fresh Debian machine for the recorder and its tests: system packages
# (ffmpeg, nats-server, GStreamer's RTSP server for the simulated camera, tesseract
# for the clock-overlay check in tests, Chromium for the browser playback test, the
# AWS CLI, rclone and s3cmd for the S3 API tests,
# procps for the tests' leaked-process checks)
# through apt-get when missing, then npm dependencies when package-lock.json
# changed. Fast (< 1 s) when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v tesseract >/dev/null 2>&1 || need+=(tesseract-ocr)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# The S3 clients people use, to test the S3 API with them unchanged.
command -v aws >/dev/null 2>&1 || need+=(awscli)
command -v rclone >/dev/null 2>&1 || need+=(rclone)
command -v s3cmd >/dev/null 2>&1 || need+=(s3cmd)
# ps and pgrep: tests check that no child process outlives its owner.
{ command -v ps >/dev/null 2>&1 && command -v pgrep >/dev/null 2>&1; } || need+=(procps)
# The simulated camera's elements: encoders for every codec it sends (AAC, G.711, G.722,
# G.726 from gstreamer1.0-libav; Opus from -base; MP3 (lame) and the RTP payloaders from
# -good; x265 from -bad/-ugly), the PS muxer and the SD card's splitmuxsink.
gst_missing() {
  command -v gst-inspect-1.0 >/dev/null 2>&1 || return 0
  local e
  for e in x265enc avenc_aac avenc_g722 avenc_g726 opusenc lamemp3enc rtpg722pay rtpg726pay rtpopuspay rtpmpapay mpegpsmux splitmuxsink; do
    gst-inspect-1.0 "$e" >/dev/null 2>&1 || return 0
  done
  return 1
}
if ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer' >/dev/null 2>&1 || gst_missing; then
  need+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
         gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

stamp=node_modules/.setup-stamp
if [ -L node_modules ]; then
  # A git worktree sharing another checkout's install: npm ci would empty it through the link.
  echo "setup: node_modules is a link; not reinstalled here" >&2
elif [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  echo "setup: installing npm dependencies" >&2
  npm ci --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi
