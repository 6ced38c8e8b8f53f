#!/usr/bin/env bash
# Set up (if needed) and run the default test suite. Extra args go to pytest
# (e.g. `recipes/test.sh -m slow` for the end-to-end tests).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$top/recipes/setup.sh"
cd "$top"
exec .venv/bin/python -m pytest -q "$@"
