#!/usr/bin/env bash
# The R 4.5 / Seurat 5 / Bioconductor 3.21 stack: a Debian 13 (trixie) chroot, built once per machine and
# cached outside the checkout, so fresh clones on the same machine reuse it.
#
#   mk/trixie.sh build          create or update the chroot (debootstrap, then the R packages below)
#   mk/trixie.sh run CMD...     run CMD (through bash -c) inside it, in the current directory
#
# `run` binds /proc, /dev, the checkout (and the current directory when outside it) and the prefix of the
# Python that the project venv points to at their own paths in a private mount namespace (the mounts vanish with the command), so R in the chroot uses the
# project's Python 3.11 venv and the local CPU torch wheel installed in it.
set -euo pipefail
ROOT=${PYBRIDGE_TRIXIE:-/var/cache/pybridge/trixie-r45}
MIRROR=${PYBRIDGE_TRIXIE_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PKGS="r-base-core r-cran-seurat r-cran-seuratobject r-bioc-singlecellexperiment r-bioc-spatialexperiment
      r-cran-reticulate r-cran-testthat r-cran-knitr r-cran-rmarkdown r-bioc-scuttle r-bioc-scater
      r-bioc-hdf5array r-bioc-bioccheck pandoc libopenblas0-pthread make"

build() {
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    if [ ! -f "$ROOT/.debootstrap-done" ]; then
        rm -rf "$ROOT" && mkdir -p "$ROOT"
        debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
            || { tail -20 "$ROOT.debootstrap.log"; exit 1; }
        touch "$ROOT/.debootstrap-done"
    fi
    local want; want=$(echo $PKGS | tr ' ' '\n' | sort | tr '\n' ' ')
    if [ "$(cat "$ROOT/.pybridge-packages" 2>/dev/null)" != "$want" ]; then
        cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
        unshare -m --propagation private bash -c "
            mount -t proc proc '$ROOT/proc' && mount --rbind /dev '$ROOT/dev'
            chroot '$ROOT' env DEBIAN_FRONTEND=noninteractive bash -c \
              'apt-get update -qq && apt-get install -y -qq --no-install-recommends $want >/dev/null'"
        echo "$want" >"$ROOT/.pybridge-packages"
    fi
}

run() {
    local here checkout venv_prefix binds
    here=$(pwd -P)
    checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
    venv_prefix=$(dirname "$(dirname "$(readlink -f "${R_VENV_PYTHON:-$checkout/.venv/bin/python}")")")
    # the checkout (libraries, build folders and PYTHONPATH live there), the current directory when outside it
    binds="'$checkout' '$venv_prefix'"
    case "$here/" in "$checkout"/*) ;; *) binds="$binds '$here'" ;; esac
    # The command's environment travels as exports (R_LIBS, RETICULATE_PYTHON, ...); HOME stays /root.
    mkdir -p "$ROOT/.pybridge-env"
    local envfile; envfile=$(mktemp "$ROOT/.pybridge-env/env.XXXXXX")
    export -p | grep -v -E ' (PATH|LD_LIBRARY_PATH|R_HOME|R_SHARE_DIR|R_INCLUDE_DIR|R_DOC_DIR|OLDPWD|PWD|SHLVL|_)=' >"$envfile" || true
    local inner="source ${envfile#$ROOT}; cd '$here'; $*"
    local status=0
    unshare -m --propagation private bash -c "
        set -e
        mount -t proc proc '$ROOT/proc'; mount --rbind /dev '$ROOT/dev'
        for d in $binds; do mkdir -p \"$ROOT\$d\"; mount --bind \"\$d\" \"$ROOT\$d\"; done
        exec chroot '$ROOT' /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -c \"\$0\"" "$inner" || status=$?
    rm -f "$envfile"
    return $status
}

case "${1:-}" in
    build) build ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 build | run CMD..." >&2; exit 2 ;;
esac
