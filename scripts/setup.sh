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
if ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer' >/dev/null 2>&1 \
  || ! command -v gst-inspect-1.0 >/dev/null 2>&1 || ! gst-inspect-1.0 x265enc >/dev/null 2>&1 || ! gst-inspect-1.0 avenc_aac >/dev/null 2>&1 || ! gst-inspect-1.0 mpegpsmux >/dev/null 2>&1 || ! gst-inspect-1.0 splitmuxsink >/dev/null 2>&1; then
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
