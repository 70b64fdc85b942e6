"""Paper tables as named recipes: a file in this folder that declares `Recipe` objects at
module level adds recipes, found with no list to edit (core.plugins).

A recipe says what it reproduces (paper and table), the runs (a script and its flags each,
at the paper's settings), the default seeds, the table's layout (rows, columns, and which
runs make each cell), and the paper's number of each cell with its source.

    python3 sweep.py paper --list                 the recipes, what each reproduces, its runs
    python3 sweep.py paper gls-cifar10 --seeds "0 1 2" --dry-run
    python3 summarize.py results --paper gls-cifar10 --out results/paper

A cell is read from summary.json: each of its parts (a script and flags, e.g. GLS direct
and GLS after the warm-up at one smooth rate) is the mean over seeds of one accuracy
(`metric`), and the cell is the best of its parts' means (a cell of one part is that part).
docs/PAPERS.md is the manual.
"""
import difflib
import functools
from dataclasses import dataclass, field

from core.plugins import discover
from errors import UserError


@dataclass(frozen=True)
class Part:
    """Where a run's number goes: the cell (row, column), the part's name within the cell,
    and the summary.json accuracy it reads (mean over seeds)."""
    row: str
    column: str
    name: str
    metric: str


@dataclass(frozen=True)
class PaperRun:
    """One run of a recipe (before seeds): a script, its flags ({flag: value} as the script
    spells them, without dashes) and the parts of the table it feeds."""
    script: str
    flags: tuple          # ((flag, value), ...) in order
    parts: tuple          # (Part, ...)

    def words(self):
        return [w for flag, value in self.flags for w in (f"--{flag}", str(value))]


@dataclass(frozen=True)
class Recipe:
    name: str
    paper: str            # the paper, as cited
    table: str            # the table it reproduces, e.g. "Table 2"
    summary: str          # one line for --list
    runs: tuple           # (PaperRun, ...)
    rows: tuple
    columns: tuple
    epochs: dict          # {script: epochs of its runs}, the warm-ups' included
    paper_numbers: dict   # {(row, column): the paper's number, or None where unknown}
    source: str           # where paper_numbers come from
    seeds: str = "0 1 2"
    row_title: str = ""
    places: dict = field(default_factory=dict)  # {flag: value}: data locations the user may change
    notes: str = ""

    def parts(self):
        """{(row, column): [part name, ...]} in the order the runs declare them."""
        cells = {}
        for run in self.runs:
            for part in run.parts:
                names = cells.setdefault((part.row, part.column), [])
                if part.name not in names:
                    names.append(part.name)
        return cells

    def paper_number(self, row, column):
        return self.paper_numbers.get((row, column))


@functools.lru_cache(maxsize=None)
def recipes():
    """{name: Recipe} of every file in this folder."""
    return discover("papers", lambda obj, module: isinstance(obj, Recipe))


def get_recipe(name):
    found = recipes()
    if name not in found:
        close = difflib.get_close_matches(name, list(found), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UserError(f"no paper recipe is named {name!r}{hint} The recipes: {', '.join(sorted(found))} "
                        "(python3 sweep.py paper --list describes them)")
    return found[name]


def cell_value(part_means):
    """The cell of a table from its parts' means ({part: mean or None}): the best mean, and
    the part it came from; (None, None) when no part has one."""
    known = [(mean, name) for name, mean in part_means.items() if mean is not None]
    if not known:
        return None, None
    mean, name = max(known, key=lambda m: m[0])
    return mean, name


def flags_of(**flags):
    return tuple(flags.items())
