# Sourced by bench/setup_scvi_venv.sh and bench/setup_c2l_venv.sh: the steps every peer's venv shares.
#   peer_venv VENV PIN...   create VENV with $PYTHON when missing; a constraints file in the venv's own pip.conf
#                           applies PIN... (e.g. torch==2.13.0) to every later `pip install` in it, so nothing can
#                           swap the local CPU torch for a newer (CUDA, multi-GB) build
#   installed DIST VERSION  whether DIST is installed at VERSION (local suffixes like +cpu ignored)
#   pip_install ARGS...     quiet pip install into the venv

peer_venv() {
    VENV=$1
    shift
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    printf '%s\n' "$@" > "$VENV/constraints.txt"
    printf '[install]\nconstraint = %s\n' "$VENV/constraints.txt" > "$VENV/pip.conf"
}

installed() {
    "$VENV/bin/python" - "$1" "$2" <<'PY' 2>/dev/null
import importlib.metadata as md, sys
sys.exit(0 if md.version(sys.argv[1]).split("+")[0] == sys.argv[2] else 1)
PY
}

# pip warns about every configured local index folder it does not find; those lines are noise here
pip_install() { "$VENV/bin/python" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
