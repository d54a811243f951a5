"""Print the Kubernetes objects in the YAML files named on the command line
as one JSON array, in file order, so Rust tests can read rendered manifests
without a YAML parser of their own. Empty documents are left out."""

import json
import sys

import yaml

objects = []
for name in sys.argv[1:]:
    with open(name, encoding="utf-8") as f:
        objects.extend(doc for doc in yaml.safe_load_all(f) if doc)
json.dump(objects, sys.stdout)
