# shellcheck shell=bash
# Shared by scripts/*.sh: run privileged steps as root directly, or through sudo when
# not root (a fresh Debian machine has no sudo; a developer's account uses it).

# as_root CMD...: CMD as root; a one-line error (exit 1) when that is impossible.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "registry-cache: '$1' needs root: run this as root, or install sudo" >&2
    exit 1
  fi
}

# apt_install PACKAGE...: non-interactive, only what is asked for.
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_venv PYTHON VENV: VENV holds a working venv (pip included) made by PYTHON;
# Debian's python3 needs python3-venv for that, installed here when missing.
ensure_venv() {
  local python=$1 venv=$2
  if [[ -x $venv/bin/python && -x $venv/bin/pip ]]; then
    return 0
  fi
  if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "registry-cache: $python cannot make a venv: installing python3-venv" >&2
    apt_install python3-venv
  fi
  # --clear: an earlier attempt without ensurepip leaves a venv without pip.
  "$python" -m venv --clear "$venv"
}
