#!/usr/bin/env python3
"""Compiles every C example in the docs, so that none can rot.

    check_snippets.py SOURCE_ROOT BUILD_ROOT CC SANITIZE

Every ```c block of README.md and docs/*.md is checked with CC:
  - a block with `int main(` is a whole program: it is compiled, linked
    against the library in BUILD_ROOT and run (exit 0 within 20 s); its
    output must contain the text of a `<!-- snippet-expect: TEXT -->`
    comment placed before the block, if any. Under a sanitizer build
    (SANITIZE is not "none") it is only compiled;
  - a block that defines a function at file scope is compiled as a file;
  - any other block is a fragment: it is compiled as the body of a
    function.
A `<!-- snippet-context: DECLARATIONS -->` comment right before a block
gives the declarations it relies on (the caller's variables and helpers),
placed at file scope before it. A `<!-- snippet-libs: NAME ... -->`
comment names sibling libraries of the build (e.g. cfutures-mpi) that a
whole program also links with: such a program is linked, not run (it
needs a launcher such as mpiexec), and only compiled when the build has
no such library (libNAME.so missing: MPI not found). Blocks compile with -Wall -Wextra -Werror
(unused names allowed: fragments declare what the prose uses).
Prints one line per block; exits 1 if any failed.
"""
import os
import re
import subprocess
import sys
import tempfile

FENCE = re.compile(r"^```c\s*$")
CONTEXT = re.compile(r"<!--\s*snippet-context:(.*?)-->", re.S)
EXPECT = re.compile(r"<!--\s*snippet-expect:(.*?)-->", re.S)
LIBS = re.compile(r"<!--\s*snippet-libs:(.*?)-->", re.S)
FUNC_DEF = re.compile(r"^(?!(?:if|while|for|switch|else|do)\b)"
                      r"(static\s+)?[A-Za-z_][\w\s\*]*\([^;]*\)\s*\{\s*$", re.M)
FLAGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
         "-Wno-unused-variable", "-Wno-unused-function",
         "-Wno-unused-parameter", "-Wno-unused-but-set-variable"]


def comments_above(lines, i):
    """The HTML comments stacked right above line i (blank lines allowed)."""
    out = []
    j = i - 1
    while True:
        while j >= 0 and lines[j].strip() == "":
            j -= 1
        if j < 0 or not lines[j].rstrip().endswith("-->"):
            return "\n".join(out)
        k = j
        while k >= 0 and "<!--" not in lines[k]:
            k -= 1
        if k < 0:
            return "\n".join(out)
        out[:0] = lines[k:j + 1]
        j = k - 1


def blocks(path):
    """Yields (line, code, context, expect, libs) for each ```c block."""
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            head = comments_above(lines, i)
            ctx = " ".join(m.strip() for m in CONTEXT.findall(head))
            exp = [m.strip() for m in EXPECT.findall(head)]
            libs = " ".join(LIBS.findall(head)).split()
            start = i + 1
            k = start
            while k < len(lines) and not lines[k].startswith("```"):
                k += 1
            yield start, "\n".join(lines[start:k]), ctx, exp, libs
            i = k
        i += 1


def main():
    src, build, cc, sanitize = sys.argv[1:5]
    inc = os.path.join(src, "include")
    docs = [os.path.join(src, "README.md")] + sorted(
        os.path.join(src, "docs", f) for f in os.listdir(os.path.join(src, "docs"))
        if f.endswith(".md"))
    failed = 0
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for doc in docs:
            for line, code, ctx, expect, libs in blocks(doc):
                total += 1
                where = "%s:%d" % (os.path.relpath(doc, src), line)
                prelude = ("#include <cfutures.h>\n#include <stdio.h>\n"
                           "#include <stdlib.h>\n#include <string.h>\n"
                           "#include <math.h>\n#include <stdint.h>\n"
                           "#include <unistd.h>\n")
                program = "int main(" in code
                if program or FUNC_DEF.search(code) or "#include" in code:
                    body = code
                else:
                    body = "void doc_snippet(void);\nvoid doc_snippet(void) {\n%s\n}" % code
                text = "%s%s\n#line %d \"%s\"\n%s\n" % (
                    prelude, ctx, line, os.path.relpath(doc, src), body)
                c = os.path.join(tmp, "snippet.c")
                open(c, "w").write(text)
                run = program and sanitize == "none"
                link = run
                if libs:  # siblings: linked if built, never run here
                    run = False
                    link = program and sanitize == "none" and all(
                        os.path.exists(os.path.join(build, "lib%s.so" % l))
                        for l in libs)
                cmd = [cc] + FLAGS + ["-I", inc, c]
                if link:
                    exe = os.path.join(tmp, "snippet")
                    cmd += ["-o", exe, "-L", build] + [
                        "-l" + l for l in libs] + ["-lcfutures", "-pthread",
                                                   "-Wl,-rpath," + build]
                else:
                    cmd += ["-fsyntax-only"]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    failed += 1
                    print("FAIL %s: does not compile\n%s" % (where, r.stderr))
                    continue
                if run:
                    try:
                        out = subprocess.run([exe], capture_output=True,
                                             text=True, timeout=20)
                    except subprocess.TimeoutExpired:
                        failed += 1
                        print("FAIL %s: did not end within 20 s" % where)
                        continue
                    missing = [e for e in expect if e not in out.stdout]
                    if out.returncode != 0 or missing:
                        failed += 1
                        print("FAIL %s: exit %d, output %r, expected %r" %
                              (where, out.returncode, out.stdout, expect))
                        continue
                print("ok   %s (%s)" % (where, "ran" if run else
                                         "linked" if link else
                                         "program" if program else "compiled"))
    print("%d blocks, %d failed" % (total, failed))
    return 1 if failed or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
