#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh machine for the asr toolkit.
#  - Debian packages: TTS engines (corpus generation), sox, NIST sclite (sctk), graphviz.
#    Installed with apt-get when missing and running as root; otherwise we name them and stop.
#  - Python: a local venv in .venv with the package installed editable (+ pytest).
# Re-running is cheap: each step is skipped when already satisfied.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"

deb_pkgs=(espeak-ng festival festlex-cmu festlex-poslex festvox-kallpc16k festvox-kdlpc16k
          festvox-us-slt-hts flite sox sctk graphviz)
missing=()
for p in "${deb_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[setup] ERROR: missing Debian packages: ${missing[*]}" >&2
    echo "[setup] install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

py=${PYTHON:-python3}
stamp=.venv/.asr-installed
want=$(cat pyproject.toml | sha1sum | cut -c1-12)
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$py" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing Python dependencies into .venv (torch is a large wheel: about a minute)"
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$want" > "$stamp"
fi
