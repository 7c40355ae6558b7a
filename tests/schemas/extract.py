"""Writes the openAPIV3Schema of named kinds from CustomResourceDefinition YAML files.

    python tests/schemas/extract.py OUT_DIR CRD_FILE... --kinds Kind/version ...

Each schema goes to OUT_DIR/<group>_<version>_<Kind>.json with its `description` texts removed
(validation does not read them; the files stay small). Only the served version named is kept.
The source files, tags and commits are listed in each OUT_DIR/README.md.
"""
import argparse
import json
import os
import sys

import yaml


def strip_descriptions(node):
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items()
                if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--kinds", nargs="+", required=True, help="Kind/version, e.g. WasmPlugin/v1alpha1")
    args = ap.parse_args(argv)
    wanted = {tuple(k.split("/")) for k in args.kinds}
    found = set()
    os.makedirs(args.out, exist_ok=True)
    for path in args.files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                kind = spec["names"]["kind"]
                for version in spec["versions"]:
                    key = (kind, version["name"])
                    if key not in wanted:
                        continue
                    if not version.get("served"):
                        sys.exit(f"{kind}/{version['name']} is not served in {path}")
                    schema = strip_descriptions(version["schema"]["openAPIV3Schema"])
                    name = f"{spec['group']}_{version['name']}_{kind}.json"
                    with open(os.path.join(args.out, name), "w") as out:
                        json.dump(schema, out, sort_keys=True, separators=(",", ":"))
                        out.write("\n")
                    found.add(key)
    missing = wanted - found
    if missing:
        sys.exit(f"not found: {sorted(missing)}")


if __name__ == "__main__":
    main(sys.argv[1:])
