#!/usr/bin/env bash
# Install the system packages rolekit needs that PyPI cannot ship; called by `make install` / `make test`.
#
#   scripts/setup-system.sh [--test] [--dry-run]
#
# Installs only what is missing, printing each command before it runs. Debian/Ubuntu: apt-get,
# as root or through sudo. macOS: Homebrew. Everything else comes from pip (espeak-ng through the
# espeakng-loader wheel, Whisper through faster-whisper / mlx-whisper).
#   runtime  libportaudio2 (live mode's audio devices), libopenblas0-pthread (MLX's CPU GEMM, 4-6x)
#   --test   also alsa-utils + libasound2-plugins (the real ALSA duplex-stream test) and chromium
#            (the HTML report tests)
# --dry-run (or ROLEKIT_SETUP_DRY_RUN=1) prints the plan and changes nothing.
# ROLEKIT_NO_SYSTEM_PACKAGES=1 skips this script (you manage system packages yourself).
set -euo pipefail

TEST=0
DRY=${ROLEKIT_SETUP_DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    --dry-run) DRY=1 ;;
    *) echo "setup-system: unknown option $arg (use --test, --dry-run)" >&2; exit 2 ;;
  esac
done

say() { echo "setup-system: $*"; }

if [ "${ROLEKIT_NO_SYSTEM_PACKAGES:-0}" = 1 ]; then
  say "skipped (ROLEKIT_NO_SYSTEM_PACKAGES=1)"
  exit 0
fi

# Print a command, then run it (unless --dry-run).
run() {
  echo "+ $*"
  if [ "$DRY" != 1 ]; then "$@"; fi
}

# The prefix that gives root: nothing as root, sudo otherwise (non-interactive without a terminal).
root_prefix() {
  if [ "$(id -u)" = 0 ]; then
    echo ""
  elif command -v sudo >/dev/null 2>&1; then
    if [ -t 0 ]; then echo "sudo"; else echo "sudo -n"; fi
  else
    echo "NONE"
  fi
}

debian() {
  local want=(libportaudio2 libopenblas0-pthread)
  if [ "$TEST" = 1 ]; then want+=(alsa-utils libasound2-plugins chromium); fi
  local missing=()
  for pkg in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ "${#missing[@]}" = 0 ]; then
    say "system packages present: ${want[*]}"
    return 0
  fi
  say "missing system packages: ${missing[*]}"
  local prefix
  prefix=$(root_prefix)
  if [ "$prefix" = NONE ]; then
    say "not root and no sudo: run as root: apt-get install -y --no-install-recommends ${missing[*]}" >&2
    return 1
  fi
  # shellcheck disable=SC2086  # the prefix is zero, one or two words
  run $prefix apt-get update -qq
  # shellcheck disable=SC2086
  run $prefix env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

macos() {
  if ! command -v brew >/dev/null 2>&1; then
    say "Homebrew not found: install it from https://brew.sh, then \`brew install portaudio\`" >&2
    return 1
  fi
  # sounddevice's macOS wheel usually bundles PortAudio; brew's is the fallback it finds otherwise.
  if brew list --versions portaudio >/dev/null 2>&1; then
    say "system packages present: portaudio"
    return 0
  fi
  say "missing system packages: portaudio"
  run brew install portaudio
}

case "$(uname -s)" in
  Linux)
    if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
      debian
    else
      say "not Debian/Ubuntu: install PortAudio and OpenBLAS with your package manager" \
        "(and ALSA utilities and Chromium for the tests)" >&2
    fi
    ;;
  Darwin) macos ;;
  *) say "unsupported system $(uname -s): nothing installed" >&2 ;;
esac
