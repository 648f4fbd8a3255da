# SPDX-License-Identifier: MIT
"""A small block-style YAML emitter for configuration files (dicts, lists, scalars).

Strings are always double-quoted with JSON escapes, which YAML accepts as-is."""
import copy
import json
import re

PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    v = str(v)
    if PLAIN.fullmatch(v) and v.lower() not in RESERVED:
        return v
    return json.dumps(v)


def dump(obj, indent=0):
    pad = "  " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:" % (pad, k))
                out.append(dump(v, indent + 1))
            elif isinstance(v, (dict, list)):
                out.append("%s%s: %s" % (pad, k, "{}" if isinstance(v, dict) else "[]"))
            else:
                out.append("%s%s: %s" % (pad, k, _scalar(v)))
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, dict) and v:
                inner = dump(v, indent + 1).split("\n")
                out.append("%s- %s" % (pad, inner[0].lstrip()))
                out.extend(inner[1:])
            elif isinstance(v, list) and v:
                out.append("%s-" % pad)
                out.append(dump(v, indent + 1))
            else:
                out.append("%s- %s" % (pad, _scalar(v)))
    else:
        out.append(pad + _scalar(obj))
    return "\n".join(x for x in out if x != "")


def merge(base, over):
    """Deep-merges @over into a copy of @base: dicts merge, anything else replaces; a value of
    None in @over deletes the key."""
    res = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            res.pop(k, None)
        elif isinstance(v, dict) and isinstance(res.get(k), dict):
            res[k] = merge(res[k], v)
        else:
            res[k] = copy.deepcopy(v)
    return res
