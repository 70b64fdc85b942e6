"""Plug-in discovery: a file placed in a package is found, with no list to edit.

discover(package, accept) imports every module of the package (in name order) and
collects the objects `accept` takes; each is keyed by its `name`. Two plug-ins with one
name are an error naming both files, so a copied file never silently shadows another.
"""
import importlib
import pkgutil

from errors import UserError


class Plugins(dict):
    """{name: object}, and .files: {name: the file that declares it}."""

    def __init__(self):
        super().__init__()
        self.files = {}


def discover(package, accept):
    """Plugins of the objects accept(obj, module) takes among the module-level values of every
    module of `package` (a package name); lists and tuples are looked into."""
    found = Plugins()
    where = found.files
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for value in vars(module).values():
            for obj in value if isinstance(value, (list, tuple)) else (value,):
                if not accept(obj, module):
                    continue
                name = obj.name
                if name in found and found[name] is not obj:
                    raise UserError(f"two plug-ins are named {name!r}: in {where[name]} and in "
                                    f"{module.__file__}; rename one")
                found[name], where[name] = obj, module.__file__
    return found
