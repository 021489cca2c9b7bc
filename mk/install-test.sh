#!/usr/bin/env bash
# The packages as a user gets them: the wheel into a fresh venv and the R tarball into a fresh R library,
# from a temporary directory with no source tree on any path; then every Python and shell block of README.md and
# docs/*.md (mk/docs-blocks.py), the README's R quick start (cut out of README.md between its "install-test"
# markers) and both vignettes run against that install.
# Usage: mk/install-test.sh PYTHON TORCH_PIN WHEEL R_TARBALL README
set -euo pipefail
python=$1 torch_pin=$2
wheel=$(realpath "$3") tarball=$(realpath "$4") readme=$(realpath "$5")
checkout=$(realpath "$(dirname "$0")/..")

work=$(mktemp -d /tmp/pybridge-install-test.XXXXXX)
cd "$work"
unset PYTHONPATH R_LIBS_SITE RETICULATE_PYTHON VIRTUAL_ENV
export R_LIBS="$work/Rlib" R_LIBS_USER="$work/Rlib" WORKON_HOME="$work/virtualenvs"
export R_USER_DATA_DIR="$work/R-data" R_USER_CACHE_DIR="$work/R-cache"
export PYBRIDGE_REQUIRE_PYTHON=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p Rlib logs

# step NAME COMMAND...: run it with its output in logs/NAME.log, print its wall time, show the log on failure.
step() {
    local name=$1 start=$SECONDS log
    log="logs/$(tr -c 'A-Za-z0-9\n' - <<<"$name").log"
    shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "install-test: step '$name' failed (log and files kept in $work)"
        exit 1
    fi
    printf '  %-34s %4d s\n' "$name" $((SECONDS - start))
}

# The lines of README.md's code block between <!-- install-test: NAME --> and <!-- /install-test -->.
readme_block() {
    awk -v start="<!-- install-test: $1 -->" '
        $0 == start { inside = 1; next }
        inside && $0 == "<!-- /install-test -->" { exit }
        inside && !/^```/ { print }' "$readme"
}

# Nothing may come from the checkout: the module and the R package are the installed copies.
check_no_checkout() {
    local py_file r_dir
    py_file=$(venv/bin/python -c 'import pybridge; print(pybridge.__file__)')
    r_dir=$(Rscript -e 'cat(find.package("pybridge"))')
    echo "python module: $py_file"; echo "R package: $r_dir"
    [[ $py_file == "$work"/* && $r_dir == "$work"/* && $py_file != "$checkout"/* && $r_dir != "$checkout"/* ]]
}

# installPybridge(), run by the R quick start, must have installed the carried copy with the CPU torch.
check_install_pybridge() {
    local py="$WORKON_HOME/r-pybridge/bin/python"
    local want
    want=$(Rscript -e 'cat(as.character(packageVersion("pybridge")))')
    "$py" - "$want" "$torch_pin" <<'EOF'
import importlib.metadata as m, sys
import torch
want, torch_pin = sys.argv[1], sys.argv[2].split("==")[1]
have = {d: m.version(d) for d in ("pybridge-sc", "torch")}
print(have, "cuda:", torch.version.cuda)
assert have["pybridge-sc"] == want, f"pybridge-sc {have['pybridge-sc']} != the R package's {want}"
assert have["torch"] == f"{torch_pin}+cpu" and torch.version.cuda is None, f"not the CPU torch {torch_pin}"
assert "pybridge" not in {d.metadata["Name"] for d in m.distributions()}, "PyPI's 'pybridge' was installed"
EOF
    du -sh "$WORKON_HOME/r-pybridge"
}

render_vignettes() {
    tar xzf "$tarball" pybridge/vignettes
    for v in pybridge/vignettes/*.Rmd; do
        echo "== $v"
        RETICULATE_PYTHON="$work/venv/bin/python" Rscript -e "rmarkdown::render('$v', quiet = TRUE)"
        grep -q 'Python is missing' "${v%.Rmd}.html" && { echo "$v rendered without Python"; return 1; }
    done
    ls -la pybridge/vignettes/*.html
}

echo "install-test in $work"
total=$SECONDS
step "venv + $torch_pin" bash -c "'$python' -m venv venv && venv/bin/python -m pip install '$torch_pin'"
step "wheel[r] (non-editable) + deps" venv/bin/python -m pip install "$wheel[r]"
step "R CMD INSTALL tarball" R CMD INSTALL --no-test-load -l Rlib "$tarball"
step "no checkout on any path" check_no_checkout
readme_block R > quickstart.R
[[ -s quickstart.R ]] || { echo "README.md lacks its install-test block"; exit 1; }
step "README + docs/ code blocks" venv/bin/python -I "$checkout/mk/docs-blocks.py" "$checkout/README.md" \
    "$checkout"/docs/*.md
step "README R quick start" Rscript quickstart.R
step "installPybridge() result" check_install_pybridge
step "vignettes rendered" render_vignettes
sed 's/^/    /' logs/installPybridge---result.log
printf '  %-34s %4d s\n' "total" $((SECONDS - total))
rm -rf "$work"
