"""Paper tables as named recipes: a file in this folder that declares `Recipe` objects at
module level adds recipes, found with no list to edit (core.plugins).

A recipe says what it reproduces (paper and table), the runs (a script and its flags each,
at the paper's settings), the default seeds, the table's layout (rows, columns, and which
runs make each cell), and, cell by cell, the reference number with where it was read
(`Ref`: a `Source` and the table, row and column in it), or why the cell has none; and,
optionally, further reference columns (`more_refs`, e.g. a third party's reproduction),
each a number per cell with its own source, shown beside the first.

    python3 sweep.py paper --list                 the recipes, what each reproduces, its runs
    python3 sweep.py paper gls-cifar10 --seeds "0 1 2" --dry-run
    python3 summarize.py results --paper gls-cifar10 --out results/paper

A cell is read from summary.json: each of its parts (a script and flags, e.g. GLS direct
and GLS after the warm-up at one smooth rate) is the mean over seeds of one accuracy
(`metric`), and the cell is the part with the best mean of its `select` number (the
metric itself unless the part names another, e.g. a validation accuracy); a cell of one
part is that part.
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
    the summary.json accuracy it reads (mean over seeds), and the summary.json number that
    chooses among the cell's parts (empty: the metric itself)."""
    row: str
    column: str
    name: str
    metric: str
    select: str = ""


@dataclass(frozen=True)
class Source:
    """Where reference numbers were read: `cites` names the work and its version (arXiv
    vN, camera-ready, submission) or the board or third party that quotes it; `where` the
    address or repository path and commit; `covers` and `missing` what it gives and lacks
    (docs/PAPERS.md lists them)."""
    key: str
    cites: str
    where: str
    covers: str
    missing: str = ""


@dataclass(frozen=True)
class Ref:
    """A cell's reference: the number and its source, with `at` the table, row and column
    in that source; or no number (number and source None), `at` saying why."""
    number: float = None
    source: Source = None
    at: str = ""


@dataclass(frozen=True)
class PaperRun:
    """One run of a recipe (before seeds): a script, its flags ({flag: value} as the script
    spells them, without dashes) and the parts of the table it feeds."""
    script: str
    flags: tuple          # ((flag, value), ...) in order
    parts: tuple          # (Part, ...)

    def words(self):
        """The flags as words; a flag whose value is None is a switch (--no-nesterov)."""
        words = []
        for flag, value in self.flags:
            words += [f"--{flag}"] if value is None else [f"--{flag}", str(value)]
        return words


@dataclass(frozen=True)
class Recipe:
    name: str
    paper: str            # the paper, as cited
    table: str            # the table it reproduces, and which version its reference numbers are of
    summary: str          # one line for --list
    runs: tuple           # (PaperRun, ...)
    rows: tuple
    columns: tuple
    epochs: dict          # {script: epochs of its runs}, the warm-ups' included (None: they differ by run)
    refs: dict            # {(row, column): Ref}, every cell of the table
    seeds: str = "0 1 2"
    row_title: str = ""
    places: dict = field(default_factory=dict)  # {flag: value}: data locations the user may change
    notes: str = ""
    # Further reference columns, shown beside the first: ((name, {(row, column): Ref}), ...),
    # each naming every cell of the table like refs.
    more_refs: tuple = ()

    def reference_columns(self):
        """((name, {(row, column): Ref}), ...): the first reference column ("paper", refs)
        and the further ones (more_refs)."""
        return (("paper", self.refs),) + tuple(self.more_refs)

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
        ref = self.refs.get((row, column))
        return None if ref is None else ref.number

    @property
    def paper_numbers(self):
        """{(row, column): number} of the cells that have one."""
        return {cell: ref.number for cell, ref in self.refs.items() if ref.number is not None}

    def sources(self, refs=None):
        """[Source] the cells' numbers come from, in the order of the table: of one reference
        column (refs), or of every column in order (None)."""
        found = []
        for column_refs in ([refs] if refs is not None else [r for _, r in self.reference_columns()]):
            for row in self.rows:
                for column in self.columns:
                    ref = column_refs.get((row, column))
                    if ref is not None and ref.source is not None and ref.source not in found:
                        found.append(ref.source)
        return found

    @property
    def source(self):
        """One line naming every source of the first reference column and how many cells have none."""
        return self.source_line(self.refs)

    def source_line(self, refs):
        """One line naming every source of a reference column and how many cells have none."""
        cells = len(self.rows) * len(self.columns)
        known = sum(1 for ref in refs.values() if ref.number is not None)
        def count(source):
            n = sum(1 for r in refs.values() if r.source == source)
            return f"{n} cell" + ("s" if n != 1 else "")
        named = "; ".join(f"{s.cites} ({count(s)})" for s in self.sources(refs))
        line = named or "no source read gives a number of this table"
        return line + (f"; {cells - known} of {cells} cells have no published number (?)" if known < cells else "")


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


def cell_value(part_means, select_means=None):
    """The cell of a table from its parts' means ({part: mean or None}): the mean of the
    part with the best select mean ({part: mean or None}; default the means themselves),
    and that part; (None, None) when no part has both."""
    select_means = part_means if select_means is None else select_means
    known = [(select_means.get(name), mean, name) for name, mean in part_means.items()
             if mean is not None and select_means.get(name) is not None]
    if not known:
        return None, None
    _, mean, name = max(known, key=lambda m: m[0])
    return mean, name


def flags_of(**flags):
    return tuple(flags.items())
