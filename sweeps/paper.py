"""`sweep.py paper NAME`: a paper table's recipe (papers/) as the sweep's runs, and the
lines printed before it starts (its runs, epochs and estimated GPU-hours)."""
import copy

from . import SweepError
from .cli import ROOT, numbers
from .grid import Axis, Token, check_tokens, load_script, required_scripts, stage_words, tokenize


def plan_paper(opts, words):
    """plan() of `sweep.py paper NAME`: the recipe's runs (papers/) times the seeds, each
    with the runs it requires, through the same machinery as every sweep. A flag the recipe
    sets is refused (the runs are the paper's); its data locations (places) give way to
    the user's. opts.paper holds (recipe, [(script, cfg, method)]) for the estimate."""
    from papers import get_recipe
    from papers.smoke import smoke_plan

    from .plan import build_runs, finish_plan

    recipe = get_recipe(opts.recipe)
    if opts.smoke:
        recipe, words, opts.smoke = smoke_plan(recipe, words)
    seeds = numbers(opts.seeds if opts.seeds is not None else recipe.seeds, "--seeds", int)
    if opts.warmup_args and not any(load_script(r.script, r.words() + words).requires for r in recipe.runs):
        raise SweepError(f"--warmup_args: the runs of the recipe {recipe.name} need no other run first (no "
                         "warm-up), so its flags would reach no run: drop it")
    runs, common = [], []
    for paper_run in recipe.runs:
        fixed = paper_run.words()
        top = load_script(paper_run.script, fixed + words)
        scripts = required_scripts([top], words)
        fixed_axis = Axis(f"the recipe {recipe.name}", [tokenize(fixed, scripts, f"the recipe {recipe.name}")])
        seed_axis = Axis("--seeds", [[Token("--seed", "seed", ["--seed", s])] for s in seeds])
        run_common = tokenize(words, scripts)
        for token in run_common:
            if token.dest in fixed_axis.dests:
                raise SweepError(f"{' '.join(token.words)}: the recipe {recipe.name} sets {token.flag} "
                                 f"(the paper's setting); drop it, or sweep {paper_run.script}.py itself "
                                 "for other settings")
        check_tokens(run_common, [seed_axis], "the flags of the runs")
        places = tokenize([w for flag, v in recipe.places.items() for w in (f"--{flag}", v)], scripts)
        run_common += [t for t in places if t.dest not in {c.dest for c in run_common}]
        runs += build_runs(opts, [top], [seed_axis, fixed_axis], run_common,
                           paper_stages(opts, recipe, top, scripts))
        common += run_common
    planned = finish_plan(opts, runs, common, f"sweep_paper_{recipe.name}")
    opts.paper = (recipe, [paper_config(run, recipe) for run in planned[1]])
    return planned


def paper_stages(opts, recipe, top, scripts):
    """stage_words for one run of a recipe: --warmup_args reach the runs that have a warm-up,
    --stage_args SCRIPT=... the runs of SCRIPT (a script of no run of the recipe is an error)."""
    names = {s.name for s in scripts}
    known = {r.script for r in recipe.runs} | {getattr(load_script(r.script, r.words()), "requires", None)
                                                for r in recipe.runs}
    for text in opts.stage_args:
        name = text.partition("=")[0]
        if (name[:-len(".py")] if name.endswith(".py") else name) not in known:
            raise SweepError(f"--stage_args {text!r}: SCRIPT must be one of the recipe's scripts: "
                             f"{', '.join(sorted(k for k in known if k))}")
    mine = copy.copy(opts)
    mine.warmup_args = opts.warmup_args if top.requires else ""
    mine.stage_args = [t for t in opts.stage_args
                       if t.partition("=")[0].removesuffix(".py") in names]
    return stage_words(mine, [top], scripts)


def paper_config(run, recipe):
    """(script, cfg, method) of a run of a recipe, from its plan, its epochs checked against
    the recipe's (a --warmup_args or --stage_args --n_epoch would make them another protocol)."""
    name, cfg = run.plan.script, run.plan.cfg
    want = recipe.epochs.get(name)
    if want is not None and cfg.n_epoch != want:
        raise SweepError(f"the recipe {recipe.name} trains {run.script} for {want} epochs, the paper's; "
                         f"these flags make it {cfg.n_epoch}: drop --n_epoch from --warmup_args/--stage_args")
    return name, cfg, run.plan.method


def recipe_listing():
    from papers import recipes

    lines = ["paper recipes (python3 sweep.py paper NAME --dry-run: runs, epochs, GPU-hours):"]
    for name, recipe in sorted(recipes().items()):
        seeds = len(recipe.seeds.split())
        lines.append(f"  {name:<15} {recipe.summary}")
        lines.append(f"  {'':<15} reproduces {recipe.paper}, {recipe.table}; {len(recipe.runs)} runs a seed "
                     f"(and the warm-ups they need), default seeds '{recipe.seeds}' ({seeds})")
    return "\n".join(lines)


def paper_report(opts):
    """The lines printed before a paper sweep starts (and by --dry-run): the recipe, the
    runs, epochs and the estimated GPU-hours with its basis."""
    from papers.cost import default_benches, estimate, read_benches

    recipe, planned = opts.paper
    benches = read_benches(opts.bench if opts.bench else default_benches(ROOT))
    seeds = opts.seeds if opts.seeds is not None else recipe.seeds
    head = f"paper {recipe.name}: {recipe.paper}, {recipe.table}; seeds {seeds}"
    if opts.smoke:
        return f"{head}\n{len(planned)} runs, results in {opts.smoke}"
    return "\n".join([head] + estimate(planned, benches))

