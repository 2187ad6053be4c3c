#!/bin/sh
# Installs skiff from a local build (or a downloaded binary given as SKIFF_BINARY)
# and starts it under systemd when systemd is present.
#   curl -sfL <release-url>/install.sh | sh -      (release) or
#   SKIFF_BINARY=target/release/skiff sh packaging/install.sh
set -eu
BIN_DIR=${SKIFF_BIN_DIR:-/usr/local/bin}
SRC=${SKIFF_BINARY:-target/release/skiff}
[ -x "$SRC" ] || { echo "skiff binary not found at $SRC (build with: cargo build --release)" >&2; exit 1; }
install -m 0755 "$SRC" "$BIN_DIR/skiff"
mkdir -p /etc/skiff /var/lib/skiff
if [ -d /run/systemd/system ]; then
  install -m 0644 "$(dirname "$0")/../systemd/skiff.service" /etc/systemd/system/skiff.service
  systemctl daemon-reload
  systemctl enable --now skiff
  echo "skiff started; kubeconfig: /etc/skiff/skiff.yaml"
else
  echo "installed $BIN_DIR/skiff; start it with: skiff server"
fi
