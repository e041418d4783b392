"""lucidrains' `linformer` package (the peer the drop-in module copies), loaded beside ours.

Both packages are named `linformer`, so his cannot be imported by name while ours is: this finds his
package directory (on sys.path, shadowed by ours, or in $LUCIDRAINS_LINFORMER_PATH, the directory that
holds his `linformer/`), imports it with `sys.modules` pointed at it for the duration (his modules
import each other as `linformer.*`), and puts ours back. Returns his `linformer.linformer` module, or
None with the reason.
"""

import importlib
import os
import sys


def _candidates():
    env = os.environ.get("LUCIDRAINS_LINFORMER_PATH")
    return ([env] if env else []) + [p for p in sys.path if p]


def find_dir():
    for root in _candidates():
        pkg = os.path.join(root, "linformer")
        # His signature files: ours has neither.
        if os.path.isfile(os.path.join(pkg, "linformer.py")) and os.path.isfile(os.path.join(pkg, "reversible.py")):
            return root
    return None


def load():
    root = find_dir()
    if root is None:
        return None, ("lucidrains' linformer package not found (pip install linformer==0.2.3 into a site-packages "
                      "that ours does not overwrite, or set LUCIDRAINS_LINFORMER_PATH to the directory holding it)")
    ours = {k: v for k, v in sys.modules.items() if k == "linformer" or k.startswith("linformer.")}
    for k in ours:
        del sys.modules[k]
    sys.path.insert(0, root)
    try:
        his = importlib.import_module("linformer.linformer")
    finally:
        sys.path.remove(root)
        for k in [k for k in sys.modules if k == "linformer" or k.startswith("linformer.")]:
            del sys.modules[k]
        sys.modules.update(ours)
    return his, None
