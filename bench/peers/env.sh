# Sourced by bench/peers/run_*.sh: the Python interpreter that holds the peer runtimes, and the
# intq binary to measure.

# peers_python VENV MODULES PACKAGE...: prints the interpreter to use. $INTQ_PEERS_PYTHON, when
# set, is used as it is; otherwise VENV (created on first use) gets the PACKAGEs from the package
# index with pip unless `import MODULES` already works there. pip's output goes to stderr.
peers_python() {
  local venv="$1" modules="$2"
  shift 2
  if [ -n "${INTQ_PEERS_PYTHON:-}" ]; then
    echo "$INTQ_PEERS_PYTHON"
    return
  fi
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
  fi
  if ! "$venv/bin/python" -c "import $modules" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q "$@" >&2
  fi
  echo "$venv/bin/python"
}

# intq_bin ROOT: $INTQ_BIN when set, else intq built in release mode from the workspace at ROOT.
intq_bin() {
  if [ -n "${INTQ_BIN:-}" ]; then
    echo "$INTQ_BIN"
    return
  fi
  (cd "$1" && cargo build --release -q -p intq-cli) >&2
  echo "$1/target/release/intq"
}
