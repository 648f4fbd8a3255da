#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Source checks the compiler does not make (after curl's checksrc): banned calls, comment
style, whitespace, the SPDX line, and the layering rule for includes. Exits 1 on any finding."""
import re
import subprocess
import sys

BANNED = ["sprintf", "vsprintf", "strcpy", "strcat", "strncpy", "strtok", "atoi", "atol",
          "gets", "alloca", "gmtime", "localtime", "strerror", "rand", "system"]
BANNED_RE = re.compile(r"(?<![\w.>])(" + "|".join(BANNED) + r")\s*\(")
# Layer order: a module may include only its own layer and those before it.
LAYERS = ["core", "net", "tls", "http", "h1", "tunnel", "auth", "conf", "cache", "proxy", "app"]
HDR_LAYER = {"common": "core", "err": "core", "log": "core", "buf": "core", "arena": "core",
             "config": "core", "sock": "net", "resolve": "net", "tls": "tls", "http": "http",
             "h1": "h1", "sniff": "tunnel", "auth": "auth", "conf": "core", "access": "conf",
             "proxy": "proxy", "tunnel": "proxy", "capsule": "http", "ippkt": "tunnel", "tun": "net",
             "cache": "cache"}


def strip_strings(line):
    return re.sub(r'"(\\.|[^"\\])*"', '""', line)


def check(path):
    problems = []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    if "SPDX-License-Identifier" not in "\n".join(lines[:3]):
        problems.append((1, "missing SPDX line"))
    layer = None
    m = re.match(r"src/(\w+)/", path)
    if m:
        layer = m.group(1)
    in_comment = False
    for no, line in enumerate(lines, 1):
        if "\t" in line:
            problems.append((no, "tab"))
        if line.rstrip() != line:
            problems.append((no, "trailing whitespace"))
        code = strip_strings(line)
        # drop /* */ comment text so banned words in prose do not count
        if in_comment:
            if "*/" in code:
                code = code.split("*/", 1)[1]
                in_comment = False
            else:
                continue
        code = re.sub(r"/\*.*?\*/", "", code)
        if "/*" in code:
            code = code.split("/*", 1)[0]
            in_comment = True
        if "//" in code and not path.startswith("tests/"):
            problems.append((no, "// comment"))
        bm = BANNED_RE.search(code)
        if bm:
            problems.append((no, "banned call " + bm.group(1)))
        im = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
        if im:
            inc = im.group(1)
            if inc.endswith(".c") and not path.startswith("tests/"):
                problems.append((no, "#include of a .c file"))
            hm = re.match(r"vd/(\w+?)(-t)?\.h$", inc)
            if layer in LAYERS and hm and hm.group(1) in HDR_LAYER:
                if LAYERS.index(HDR_LAYER[hm.group(1)]) > LAYERS.index(layer):
                    problems.append((no, "upward include of " + inc + " from layer " + layer))
    return problems


def main():
    files = subprocess.run(["git", "ls-files", "*.c", "*.h"], capture_output=True, text=True,
                           check=True).stdout.split()
    bad = 0
    for path in files:
        for no, msg in check(path):
            print(f"{path}:{no}: {msg}")
            bad += 1
    print(f"checksrc: {len(files)} files, {bad} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
