# Shared by scripts/run and scripts/test: install steps, each safe to repeat.

ensure_venv() {
  # ensure_venv [dev|run]: .venv with an editable install of this project; `dev` (the default,
  # scripts/test) adds the dev extras (pytest, mypy, ruff, playwright, schemathesis, ...),
  # `run` (scripts/run) installs only what running the server and agent needs.
  local kind="${1:-dev}"
  local python="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
  fi
  local dev_stamp=.venv/.installed
  if [ -f "$dev_stamp" ] && [ ! pyproject.toml -nt "$dev_stamp" ]; then
    return 0  # the dev install holds everything `run` needs too
  fi
  if [ "$kind" = run ]; then
    local run_stamp=.venv/.installed-run
    if [ ! -f "$run_stamp" ] || [ pyproject.toml -nt "$run_stamp" ]; then
      echo "installing hetuflow into .venv (once)"
      # --no-compile: Python compiles the modules the server imports on first use, not all
      .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -e .
      touch "$run_stamp"
    fi
    return 0
  fi
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  touch "$dev_stamp"
}

postgres_ready() {
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null
}

ensure_postgres() {
  if postgres_ready; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "PostgreSQL is not installed: installing it from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do
    if postgres_ready; then return 0; fi
    sleep 0.5
  done
  echo "PostgreSQL did not start" >&2
  return 1
}

ensure_chromium() {
  # Browser tests use Debian's Chromium through Playwright (never a downloaded browser).
  if [ -x /usr/bin/chromium ]; then return 0; fi
  echo "installing Debian's chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: chromium could not be installed; browser tests will be skipped" >&2
}
