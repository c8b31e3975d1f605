#!/usr/bin/env bash
# Installs the real SIP peers used by interop tests and benchmarks (Debian packages):
#   sip-tester (SIPp), baresip-core, sipsak, kamailio (the benchmark yardstick).
# Idempotent; quiet when everything is present. Exits non-zero when something could not be installed.
set -u
need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v sipsak >/dev/null 2>&1 || need+=(sipsak)
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[install-tools] cannot install ${need[*]}: not root or no apt-get" >&2
  exit 1
fi
echo "[install-tools] installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/tmp/sipring-install-tools.log 2>&1 || {
  echo "[install-tools] apt-get install failed; see /tmp/sipring-install-tools.log" >&2
  exit 1
}
# kamailio's Debian package may start a system service on 5060: we never want it running.
(systemctl stop kamailio 2>/dev/null; service kamailio stop 2>/dev/null; pkill -x kamailio) >/dev/null 2>&1 || true
exit 0
