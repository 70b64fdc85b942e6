"""summarize.py RESULTS --paper NAME: the runs laid out as a paper's table (a recipe of
papers/), the reference numbers beside ours, each with its source.

A cell of the table is the best of its parts: the results it chooses from, each the mean
over the seeds of one of the recipe's runs (GLS: trained directly, or after the warm-up;
`--parts` lists them all)."""
import os

from core.args import flag_errors_raise, flag_table
from core.files import atomic_write_text, warn, write_csv
from utils.plan import script_preset

from .groups import group_runs
from .runs import script_of
from .stats import mean_std
from .tables import writable
from .values import canonical, fmt_acc, is_finite, md_row, same


PAPER_COLUMNS = ("row", "column", "kind", "ours_mean", "ours_std", "n_seeds", "seeds", "from_part",
                 "paper", "difference", "status", "metric", "runs", "select", "select_mean", "paper_source")


def paper_columns(recipe):
    """The CSV's columns: PAPER_COLUMNS, then each further reference column's number,
    difference and source (NAME, NAME_difference, NAME_source)."""
    return PAPER_COLUMNS + tuple(f"{name}{suffix}" for name, _ in recipe.more_refs
                                 for suffix in ("", "_difference", "_source"))


def expected_settings(recipe_run):
    """{dest: value} the recipe fixes for one of its runs (papers.PaperRun), as the script's
    own parser reads its flags (aliases normalised: sym -> symmetric, n_epoch from --epochs)."""
    words = recipe_run.words()
    preset = script_preset(recipe_run.script, words)
    with flag_errors_raise():
        cfg, _ = preset.parse(words)
    flags = flag_table(preset.parser())
    dests = {flags[f"--{flag}"].dest for flag, _ in recipe_run.flags if f"--{flag}" in flags}
    return {d: canonical(getattr(cfg, d)) for d in sorted(dests)}


def matching_group(recipe_run, runs):
    """The runs of one recipe run: its script, the recipe's settings; among several groups
    of them (other settings, code or data) the one with the most finished seeds, the others
    named in a warning. [] when none."""
    want = expected_settings(recipe_run)
    found = [r for r in runs if script_of(r) == recipe_run.script
             and all(same(r["config"].get(k), v) for k, v in want.items())]
    if not found:
        return []
    groups = sorted(group_runs(found).values(), key=lambda g: (-len(g.done), g.gid))
    if len(groups) > 1:
        warn(f"{recipe_run.script} {' '.join(recipe_run.words())}: runs of {len(groups)} settings or "
             f"versions match; the table takes {groups[0].gid} ({len(groups[0].done)} seeds), not "
             + ", ".join(g.gid for g in groups[1:]))
    return groups[0].done


def paper_table(recipe, runs):
    """(cells, parts): the table of `recipe` from `runs`. A part is one of the results a
    cell chooses from (GLS: trained directly, or after the warm-up), the mean and sample std
    over its finished seeds of its metric; a cell is the best of its parts' means."""
    from papers import cell_value

    parts = {}
    for recipe_run in recipe.runs:
        done = matching_group(recipe_run, runs)
        for part in recipe_run.parts:
            values = [r["summary"][part.metric] for r in done if is_finite(r["summary"].get(part.metric))]
            seeds = [r["config"].get("seed", 0) for r in done if is_finite(r["summary"].get(part.metric))]
            mean, std = mean_std(values)
            select = part.select or part.metric
            chooser = mean_std([r["summary"][select] for r in done if is_finite(r["summary"].get(select))])[0]
            parts[(part.row, part.column, part.name)] = {
                "row": part.row, "column": part.column, "kind": f"part: {part.name}", "ours_mean": mean,
                "ours_std": std, "n_seeds": len(values), "seeds": " ".join(map(str, seeds)),
                "metric": part.metric, "runs": len(done), "status": "ok" if values else "missing",
                "select": select, "select_mean": chooser}
    cells = []
    for row in recipe.rows:
        for column in recipe.columns:
            names = recipe.parts().get((row, column), [])
            mine = [parts[(row, column, n)] for n in names]
            mean, best = cell_value({n: p["ours_mean"] for n, p in zip(names, mine)},
                                    {n: p["select_mean"] for n, p in zip(names, mine)})
            chosen = parts.get((row, column, best), {})
            missing = [n for n, p in zip(names, mine) if p["ours_mean"] is None]
            paper = recipe.paper_number(row, column)
            ref = recipe.refs.get((row, column))
            status = "missing" if mean is None else f"partial (no {', '.join(missing)})" if missing else "ok"
            cell = {"row": row, "column": column, "kind": "cell", "ours_mean": mean,
                    "ours_std": chosen.get("ours_std"), "n_seeds": chosen.get("n_seeds", 0),
                    "seeds": chosen.get("seeds", ""), "from_part": best if len(names) > 1 else None,
                    "paper": paper, "difference": None if mean is None or paper is None else mean - paper,
                    "status": status, "metric": chosen.get("metric"), "select": chosen.get("select"),
                    "select_mean": chosen.get("select_mean"), "paper_source": ref_text(ref)}
            for name, refs in recipe.more_refs:
                more = refs.get((row, column))
                number = None if more is None else more.number
                cell.update({name: number, f"{name}_difference": None if mean is None or number is None
                             else mean - number, f"{name}_source": ref_text(more)})
            cells.append(cell)
    return cells, list(parts.values())


def chooser_text(parts):
    """How a cell chooses among its parts, in words."""
    chosen_by = sorted({p["select"] for p in parts if p["select"] != p["metric"]})
    return f"mean {' / '.join(chosen_by)}, reported as its mean metric" if chosen_by else "mean"


def ref_text(ref):
    """Where a cell's reference number was read, or why it has none."""
    if ref is None:
        return "no reference recorded"
    return f"{ref.source.key}: {ref.at}" if ref.source is not None else ref.at


def paper_cell_text(cell, more=()):
    """ours / the reference number and our difference, then the same for each further
    reference column named in `more`."""
    ours = "missing" if cell["ours_mean"] is None else fmt_acc(cell["ours_mean"], cell["ours_std"]) + f" ({cell['n_seeds']})"
    texts = [ours]
    for number, diff in [("paper", "difference")] + [(name, f"{name}_difference") for name in more]:
        texts.append(("?" if cell[number] is None else f"{cell[number]:.2f}")
                     + ("" if cell[diff] is None else f" {cell[diff]:+.2f}"))
    return " / ".join(texts)


def where_read(cells, number, source):
    """Lines saying where each cell's reference number (the cells' key `number`) was read,
    then, grouped by reason, the cells without one (the key `source` says where or why)."""
    lines = [f"- {c['row']} / {c['column']}: {c[source]}" for c in cells if c[number] is not None]
    unread = {}
    for c in cells:
        if c[number] is None:
            unread.setdefault(c[source], []).append(f"{c['row']} / {c['column']}")
    return lines + [f"- {', '.join(names)}: {why}" for why, names in unread.items()]


def paper_markdown(recipe, cells, parts, show_parts):
    by = {(c["row"], c["column"]): c for c in cells}
    more = [name for name, _ in recipe.more_refs]
    then = "".join(f" / the {name} reference number and our difference" for name in more)
    lines = [f"# {recipe.name}: {recipe.paper}, {recipe.table}", "",
             "Each cell: ours, mean ± sample std over seeds (their number) / the reference number "
             f"(? where no source read gives one) and our difference{then}. A cell is the part with the best "
             f"{chooser_text(parts)} ({', '.join(sorted({p['kind'][6:] for p in parts}))} where several).", "",
             md_row([recipe.row_title or "row", *recipe.columns]),
             md_row(["---"] * (len(recipe.columns) + 1))]
    lines += [md_row([row] + [paper_cell_text(by[(row, col)], more) for col in recipe.columns])
              for row in recipe.rows]
    lines += ["", f"Reference numbers: {recipe.source}."]
    lines += [f"Reference numbers ({name}): {recipe.source_line(refs)}." for name, refs in recipe.more_refs]
    if recipe.notes:
        lines.append(recipe.notes)
    if recipe.sources():
        lines += ["", "Sources:"] + [f"- {s.key}: {s.cites} ({s.where})" for s in recipe.sources()]
    lines += ["", "Where each reference number was read:"] + where_read(cells, "paper", "paper_source")
    for name in more:
        lines += ["", f"Where each {name} reference number was read:"] + where_read(cells, name, f"{name}_source")
    missing = [c for c in cells if c["status"] != "ok"]
    if missing:
        lines += ["", f"{len(missing)} cell(s) missing or partial:"]
        lines += [f"- {c['row']} / {c['column']}: {c['status']}" for c in missing]
    if show_parts:
        lines += ["", "## Parts", "", md_row(["row", "column", "part", "mean ± std (seeds)", "metric"]),
                  md_row(["---"] * 5)]
        lines += [md_row([p["row"], p["column"], p["kind"][6:],
                          "missing" if p["ours_mean"] is None else f"{fmt_acc(p['ours_mean'], p['ours_std'])} ({p['n_seeds']})",
                          p["metric"]]) for p in parts]
    return "\n".join(lines) + "\n"


def write_paper(recipe, runs, out_dir, show_parts):
    """Write paper_<name>.md and .csv to out_dir; returns (markdown, cells)."""
    cells, parts = paper_table(recipe, runs)
    text = paper_markdown(recipe, cells, parts, show_parts)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, f"paper_{recipe.name}.md"), text)
    write_csv(os.path.join(out_dir, f"paper_{recipe.name}.csv"), map(writable, cells + (parts if show_parts else [])),
              paper_columns(recipe))
    return text, cells
