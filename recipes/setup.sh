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
# uv_install: the project into .venv with uv (installed from PyPI into the venv first), which
# resolves as pip does (--index-strategy unsafe-best-match: the best version over every index) and
# unpacks torch's large wheel in parallel (measured: 17 s against pip's 70 s). uv does not read pip's
# configuration, so its index URLs, find-links, constraints and CA bundle (pip.conf, PIP_* variables:
# `pip config list`) are passed on. Returns non-zero if anything fails; pip is then the installer.
uv_install() {
  .venv/bin/pip install -q --disable-pip-version-check uv >/dev/null 2>&1 && [ -x .venv/bin/uv ] || return 1
  local args=() seen=" " line key val v
  while IFS= read -r line; do
    key=${line%%=*} val=${line#*=}
    val=${val#\'} val=${val%\'} val=${val#\"} val=${val%\"}
    for v in $val; do
      case "$key" in
        *.extra-index-url) v="--extra-index-url $v" ;;
        *.index-url) v="--index-url $v" ;;
        *.find-links) v="--find-links $v" ;;
        *.constraint) v="--constraint $v" ;;
        *.cert) export SSL_CERT_FILE=$v; continue ;;
        *) continue ;;
      esac
      case "$seen" in *" $v "*) continue ;; esac
      seen+="$v "
      # shellcheck disable=SC2206
      args+=($v)
    done
  done < <(.venv/bin/pip config list 2>/dev/null)
  .venv/bin/uv pip install --python .venv/bin/python -q --index-strategy unsafe-best-match "${args[@]}" -e ".[dev]"
}
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing Python dependencies into .venv (torch is a large wheel)"
  if ! uv_install; then
    echo "[setup] uv could not install them; installing with pip (about a minute)"
    .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
  fi
  echo "$want" > "$stamp"
fi
