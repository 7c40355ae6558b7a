#!/usr/bin/env python3
"""Lists the module cycles of the crate: which modules reach each other through `crate::` paths.

A node is a module file at any depth (`config`, `providers::gemini::stream`, ...). An edge
A -> B means non-test code of A names a path inside B (`crate::B::...`, or `super::...`
resolved), B being the deepest module the path reaches. Edges between a module and its own
ancestor or descendant are left out: a folder module and its children are one unit of the
layout. Prints each strongly connected component of more than one module, and exits 0.

    python3 scripts/module_cycles.py [src]
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
PATH = re.compile(r"\b(crate|super)::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*|\{)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)::\{([^;]*)\};", re.S)


def module_of(rel):
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


MODULES = set()


def node(parts, _top_folders):
    """The deepest existing module on a path (`crate::a::b::Item` -> `a::b`)."""
    for n in range(len(parts), 0, -1):
        name = "::".join(parts[:n])
        if name in MODULES:
            return name
    return None


def related(a, b):
    return a == b or a.startswith(b + "::") or b.startswith(a + "::")


def strip_tests(text):
    # Drop `#[cfg(test)] mod tests { ... }` blocks and test-only files' bodies.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def main():
    files = []
    for root, _, names in os.walk(SRC):
        for n in names:
            if n.endswith(".rs"):
                files.append(os.path.relpath(os.path.join(root, n), SRC))
    top_folders = {f.split(os.sep)[0] for f in files if os.sep in f}
    for rel in files:
        parts = module_of(rel)
        if parts not in (["lib"], ["main"]):
            MODULES.add("::".join(parts))
    graph = {}
    for rel in files:
        parts = module_of(rel)
        if parts in (["lib"], ["main"]) or parts[-1] in ("tests", "test_support") or parts[0] == "test_support":
            continue
        me = node(parts, top_folders)
        text = strip_tests(open(os.path.join(SRC, rel), encoding="utf-8").read())
        text = re.sub(r"//[^\n]*", "", text)
        targets = []
        for m in USE_GROUP.finditer(text):
            base = m.group(1)
            for item in re.split(r",", m.group(2)):
                item = item.strip().split("::")[0].strip("{} \n")
                if item and item != "self":
                    targets.append((base, [item]))
        for m in PATH.finditer(text):
            if m.group(2) != "{":
                targets.append((m.group(1), m.group(2).split("::")))
        for base, path in targets:
            if base == "crate":
                full = path
            else:
                # super:: from a file is its parent module (mod.rs: the folder's parent).
                parent = parts[:-1]
                full = parent + path
            other = node(full, top_folders)
            if other and not related(other, me):
                # Names that are items, not modules, of a file module map to that module.
                graph.setdefault(me, set()).add(other)
    mods = {m for m in graph} | {m for s in graph.values() for m in s}
    # Keep only edges to existing modules.
    existing = set()
    for rel in files:
        n = node(module_of(rel), top_folders)
        if n:
            existing.add(n)
    graph = {a: {b for b in bs if b in existing} for a, bs in graph.items() if a in existing}
    # Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(existing):
        if v not in index:
            visit(v)
    print(f"{len(existing)} modules, {sum(len(b) for b in graph.values())} edges, {len(sccs)} cycles")
    for c in sorted(sccs):
        edges = [f"{a} -> {b}" for a in c for b in sorted(graph.get(a, ())) if b in c]
        print(f"cycle of {len(c)}: {', '.join(c)}")
        for e in edges:
            print(f"    {e}")


if __name__ == "__main__":
    main()
