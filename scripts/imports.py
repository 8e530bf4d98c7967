#!/usr/bin/env python3
"""The module graph of src/ has no cycle, and no layer imports a higher one.

A node is a module at the depth the layers are made of: `config`, `cli`,
`engine::X`, `apps::X`, `tools::X` (X a direct child: `engine::shard`,
`apps::kv`). An edge A -> B is any `crate::B...` path (in a `use` or in
code, comments excluded) in a file of A, or a `super::` path that leaves A.
Layers, lowest first: config, engine, apps, tools, cli; an edge may go
down or sideways within engine/apps/tools, never up. Prints the cycles and
the upward edges and exits 1 if there are any; `--graph` prints every edge.

Run by `make lint` (so by `make test`).
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
LAYERS = {"config": 0, "engine": 1, "apps": 2, "tools": 3, "cli": 4}
GROUPED = ("engine", "apps", "tools")


def module_of(path):
    """The module path (a list) of a source file."""
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return rel


def node(parts):
    """The graph node of a module path, or None (the crate root, main)."""
    if not parts or parts[0] not in LAYERS:
        return None
    if parts[0] in GROUPED:
        return "::".join(parts[:2]) if len(parts) > 1 else parts[0]
    return parts[0]


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def targets(text, module):
    """Module paths the text refers to, absolute."""
    found = []
    for match in re.finditer(r"\bcrate((?:::[a-z_][a-z0-9_]*)+)", text):
        found.append(match.group(1).split("::")[1:])
    for match in re.finditer(r"\b((?:super::)+)((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text):
        ups = match.group(1).count("super::")
        base = module[: len(module) - ups]
        found.append(base + match.group(2).split("::"))
    # `use crate::{a::x, b}` groups: the first segment of each member.
    for match in re.finditer(r"\bcrate::\{([^}]*)\}", text):
        for member in match.group(1).split(","):
            member = member.strip().split("::")[0]
            if member:
                found.append([member])
    return found


def graph():
    edges = {}
    for root, _, files in os.walk(SRC):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            module = module_of(path)
            source = node(module)
            if source is None:
                continue
            with open(path, encoding="utf-8") as f:
                text = strip_comments(f.read())
            for target in targets(text, module):
                dest = node(target)
                if dest is not None and dest != source:
                    edges.setdefault(source, set()).add(dest)
    return edges


def cycles(edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def main():
    edges = graph()
    if "--graph" in sys.argv:
        for source in sorted(edges):
            for dest in sorted(edges[source]):
                print(f"{source} -> {dest}")
    bad = 0
    for component in cycles(edges):
        print("import cycle: " + " <-> ".join(component))
        bad += 1
    for source in sorted(edges):
        for dest in sorted(edges[source]):
            up = LAYERS[dest.split("::")[0]] > LAYERS[source.split("::")[0]]
            if up:
                print(f"upward import: {source} -> {dest}")
                bad += 1
    if bad:
        sys.exit(1)
    print(f"imports: {sum(map(len, edges.values()))} edges between {len(edges)} modules, no cycle, none upward")


if __name__ == "__main__":
    main()
