#!/bin/sh
# Install Debian's Chromium for the report's browser test, where this machine allows it.
# Never fails the build: without root or apt-get the browser test is skipped, with a reason.
for name in chromium chromium-browser google-chrome; do
  command -v "$name" >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (apt-get) for the browser test of the report"
  export DEBIAN_FRONTEND=noninteractive
  if apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; then
    exit 0
  fi
  echo "note: apt-get could not install chromium; the browser test will be skipped"
else
  echo "note: no chromium and no root apt-get; the browser test will be skipped"
  echo "      (install it with: sudo apt-get install chromium)"
fi
exit 0
