#!/usr/bin/env bash
# Install (or update) the glasses as a systemd service; idempotent, run it again after `git pull`.
#
#   sudo systemd/install.sh                 code to /opt/glasses, venv, user, config, unit, udev rule; start
#   sudo systemd/install.sh --uninstall     stop and remove the unit and udev rule (keeps config and data)
#   sudo systemd/install.sh --uninstall --purge   also remove /opt/glasses, /etc/glasses, state, cache, user
#   systemd/install.sh --dry-run [...]      print what would be done, change nothing
#
# PREFIX (default /opt/glasses) moves the install; the unit is rewritten to match.
set -euo pipefail

PREFIX=${PREFIX:-/opt/glasses}
SRC=$(cd "$(dirname "$0")/.." && pwd)
SERVICE_USER=glasses
GROUPS_NEEDED=(gpio video audio dialout i2c)
UNIT=/etc/systemd/system/glasses.service
RULES=/etc/udev/rules.d/99-glasses-bridge.rules
CONFIG=/etc/glasses/config.toml
APT_PACKAGES=(python3 python3-venv espeak-ng alsa-utils)

mode=install purge=0 dry=0
for arg in "$@"; do
  case "$arg" in
    --uninstall) mode=uninstall ;;
    --purge) purge=1 ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

run() {
  if [ "$dry" = 1 ]; then echo "+ $*"; else "$@"; fi
}
say() { echo "install.sh: $*"; }

if [ "$dry" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo $0 $*), or --dry-run to see the plan" >&2
  exit 1
fi

uninstall() {
  run systemctl disable --now glasses.service || true
  run rm -f "$UNIT" "$RULES"
  run systemctl daemon-reload
  command -v udevadm >/dev/null && run udevadm control --reload || true
  if [ "$purge" = 1 ]; then
    run rm -rf "$PREFIX" /etc/glasses /var/lib/glasses /var/cache/glasses /var/log/glasses
    if id "$SERVICE_USER" >/dev/null 2>&1; then run userdel "$SERVICE_USER"; fi
  fi
  say "removed$([ "$purge" = 1 ] && echo ', with config, data and user' || echo '; config in /etc/glasses kept')"
}

install() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ "${#missing[@]}" -gt 0 ]; then run apt-get install -y "${missing[@]}"; fi

  for group in "${GROUPS_NEEDED[@]}"; do
    getent group "$group" >/dev/null || run groupadd --system "$group"
  done
  if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    run useradd --system --user-group --home-dir /var/lib/glasses --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
  fi
  run usermod --append --groups "$(IFS=,; echo "${GROUPS_NEEDED[*]}")" "$SERVICE_USER"

  # The code (no venv, caches or git data from the checkout), then the venv from the pinned lock.
  run mkdir -p "$PREFIX"
  if [ "$SRC" != "$PREFIX" ]; then
    if [ "$dry" = 1 ]; then
      echo "+ copy $SRC -> $PREFIX (without .venv, cache, .git)"
    else
      tar -C "$SRC" --exclude=./.venv --exclude=./cache --exclude=./.git -cf - . | tar -C "$PREFIX" -xf -
    fi
  fi
  local stamp="$PREFIX/.venv/.installed-lock"
  local lock_sum
  lock_sum=$(sha256sum "$SRC/requirements.txt" | cut -d' ' -f1)
  if [ ! -x "$PREFIX/.venv/bin/python" ]; then run python3 -m venv "$PREFIX/.venv"; fi
  if [ "$dry" = 1 ] || [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
    run "$PREFIX/.venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$PREFIX/requirements.txt"
    if [ "$dry" = 0 ]; then echo "$lock_sum" > "$stamp"; fi
  fi

  if [ ! -e "$CONFIG" ]; then
    run install -D -m 644 "$SRC/systemd/config.toml" "$CONFIG"
  else
    say "keeping $CONFIG"
  fi
  run "$PREFIX/.venv/bin/python" -m edge check-config --config "$CONFIG" --no-comments >/dev/null

  if [ "$dry" = 1 ]; then
    echo "+ sed s#/opt/glasses#$PREFIX#g systemd/glasses.service > $UNIT"
  else
    sed "s#/opt/glasses#$PREFIX#g" "$SRC/systemd/glasses.service" > "$UNIT.tmp" && mv "$UNIT.tmp" "$UNIT"
  fi
  run install -m 644 "$SRC/systemd/99-glasses-bridge.rules" "$RULES"
  command -v udevadm >/dev/null && { run udevadm control --reload; run udevadm trigger --subsystem-match=tty; } || true
  run systemctl daemon-reload
  run systemd-analyze verify "$UNIT"
  run systemctl enable glasses.service
  run systemctl restart glasses.service
  say "installed; follow it with: journalctl -u glasses -f"
}

"$mode"
