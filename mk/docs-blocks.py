"""Run every Python and shell code block of the given Markdown files, in order, against the installed package.

Usage: python -I mk/docs-blocks.py [--max-epochs N] FILE.md...

Each file runs in a fresh directory (its blocks make their own inputs) with one Python namespace shared by its
Python blocks, as in a notebook; shell blocks run with ``bash -euo pipefail`` in the same directory, with the
interpreter's bin directory first on PATH (so ``pybridge`` and ``torchrun`` are the installed ones). Training is
capped at N epochs (default 3) so the examples run in seconds: ``max_epochs=K`` and ``--max-epochs K`` become
min(K, N), and ``.train(...)`` calls and ``pybridge train`` commands without them get N. A block preceded by
``<!-- docs-test: skip REASON -->`` is not run (the reason is printed; one is required). Exits non-zero on the
first failing block, naming the file and line.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

RUN_LANGUAGES = {"python": "python", "py": "python", "bash": "shell", "sh": "shell", "shell": "shell"}
SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\b\s*(.*?)\s*-->$")


@dataclass
class Block:
    kind: str  # "python" or "shell"
    code: str
    line: int  # 1-based line of the opening fence
    skip_reason: str | None


def blocks_of(path: Path) -> list[Block]:
    """The runnable blocks of a Markdown file, with the skip marker that precedes each (if any)."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```\s*([\w+-]*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        kind = RUN_LANGUAGES.get(fence.group(1).lower())
        if kind is None:
            continue
        marker = SKIP.match(lines[start - 1].strip()) if start else None
        if marker is not None and not marker.group(1):
            sys.exit(f"{path}:{start}: a docs-test skip marker needs a reason")
        found.append(Block(kind, "\n".join(body) + "\n", start + 1, marker.group(1) if marker else None))
    return found


def cap_python(code: str, cap: int) -> str:
    """``max_epochs=K`` -> min(K, cap); ``.train(...)`` without max_epochs gets ``max_epochs=cap``."""
    code = re.sub(r"\bmax_epochs\s*=\s*([\d_]+)", lambda m: f"max_epochs={min(int(m.group(1)), cap)}", code)
    out, pos = [], 0
    for match in re.finditer(r"\.train\(", code):
        depth, end = 1, match.end()
        while depth and end < len(code):
            depth += {"(": 1, ")": -1}.get(code[end], 0)
            end += 1
        if "max_epochs" in code[match.end():end]:
            continue
        inner = code[match.end():end - 1].strip()
        out.append(code[pos:match.end()] + f"max_epochs={cap}" + (", " if inner else ""))
        pos = match.end()
    return "".join(out) + code[pos:]


def cap_shell(code: str, cap: int) -> str:
    """``--max-epochs K`` -> min(K, cap); ``pybridge train`` commands without it get ``--max-epochs cap``."""
    code = code.replace("\\\n", " ")
    code = re.sub(r"--max-epochs\s+(\d+)", lambda m: f"--max-epochs {min(int(m.group(1)), cap)}", code)
    lines = []
    for line in code.splitlines():
        if re.search(r"\bpybridge(\.cli)? train\b", line) and "--max-epochs" not in line:
            line = re.sub(r"(\bpybridge(\.cli)? train\b)", rf"\1 --max-epochs {cap}", line, count=1)
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_file(path: Path, cap: int, env: dict[str, str]) -> None:
    namespace: dict = {"__name__": "__main__"}
    with tempfile.TemporaryDirectory(prefix=f"docs-{path.stem}-") as workdir:
        os.chdir(workdir)
        for block in blocks_of(path):
            where = f"{path}:{block.line}"
            if block.skip_reason:
                print(f"  {where:<28} skipped: {block.skip_reason}", flush=True)
                continue
            start = time.perf_counter()
            if block.kind == "python":
                try:
                    exec(compile(cap_python(block.code, cap), where, "exec"), namespace)  # noqa: S102 (the docs' own code)
                except Exception:  # noqa: BLE001 (any error in a documented example is a failure)
                    traceback.print_exc()
                    sys.exit(f"docs-blocks: the Python block at {where} failed")
            else:
                result = subprocess.run(["bash", "-euo", "pipefail", "-c", cap_shell(block.code, cap)], check=False,
                                        env=env)
                if result.returncode:
                    sys.exit(f"docs-blocks: the shell block at {where} exited with {result.returncode}")
            print(f"  {where:<28} {block.kind:<6} {time.perf_counter() - start:6.1f} s", flush=True)
        os.chdir("/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--max-epochs", type=int, default=3)
    args = parser.parse_args()
    files = [f.resolve() for f in args.files]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for path in files:
        print(f"{path.name}:", flush=True)
        run_file(path, args.max_epochs, env)


if __name__ == "__main__":
    main()
