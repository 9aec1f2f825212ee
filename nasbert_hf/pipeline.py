"""The main job, `nasbert compress`: supernet -> search -> export, resumable at every stage.

`compress` trains (or resumes, or reuses) the supernet in `OUT/supernet-run/`, then
`search_and_export` (also `nasbert search RUN_DIR`) measures this machine's CPU latency table
(and one for each device a latency budget names, unless the run holds it already), runs
the exact search for every budget, re-scores the top candidates of each budget on the assembled
models, and exports the best of each as `OUT/<name>/`, with `OUT/summary.json` and
`OUT/pareto.png`.

Nothing a user made is replaced silently: a model folder whose `nasbert.json` records the same
budget and search is kept as it is (distilled or not), only missing models are exported, and a
folder holding anything else than a plain export (a distilled or fine-tuned model, a model being
distilled, a folder of unknown origin) is replaced only with `force` (`--force`). One command at a
time writes a folder: `compress` and `search` hold `OUT/.nasbert.lock` while they run.
"""

import hashlib
import logging
import math
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .architecture import Architecture
from .export import from_supernet, model_metadata, save_model_folder
from .folders import (
    CANDIDATES_FILE, METADATA_FILE, RUN_CONFIG_FILE, SUMMARY_FILE, SUPERNET_WEIGHTS_FILE, check_model_dir,
    folder_lock, read_json, read_metadata, write_json,
)
from .latency import RUNTIMES, LatencyTable, check_device, measure_latency_table, measure_model_latency, random_architectures
from .modeling import parse_op
from .search import MIN_BUDGET_USE, Budget, NoModelInBand, cost_model_for, human, load_candidates, minimum_cost, search

# The paper's family (NAS-BERT5, 10, 30, 60) and a 15M step, in total parameters: the default
# budgets are those that the candidates can meet and that compress the teacher at least
# `LADDER_MAX_FRACTION` (NAS-BERT60 is 55% of BERT-base; all-MiniLM-L6-v2's 22.7M gives 5M, 10M, 15M).
LADDER = (5e6, 10e6, 15e6, 30e6, 60e6)
LADDER_MAX_FRACTION = 0.7

logger = logging.getLogger(__name__)

RUN_SUBDIR = "supernet-run"
FINISHED_MARKERS = (SUPERNET_WEIGHTS_FILE, CANDIDATES_FILE)


@dataclass
class SearchArguments:
    """Arguments of the search-and-export stage (`nasbert search`, and the end of `nasbert compress`)."""

    run_dir: str = field(metadata={"help": "A finished supernet run folder."})
    # Help texts are argparse format strings (`%%` for %), as TrainingArguments' are.
    budgets: List[str] = field(
        default_factory=list,
        metadata={"help": "params=5M (all parameters, embeddings included, as the paper counts), "
                          "body_params=3M (op slots only), flops=2G or latency=8ms@cpu (several allowed); "
                          "default: the paper's sizes 5M, 10M, 15M, 30M, 60M up to 70%% of the teacher.",
                  "metavar": "BUDGET"},
    )
    out: str = field(default="nasbert-out", metadata={"help": "Folder for the exported models."})
    top_k: int = field(default=5, metadata={"help": "Candidates re-scored per embedding size and budget."})
    min_budget_use: float = field(
        default=MIN_BUDGET_USE,
        metadata={"help": "Consider only models using at least this fraction of their budget, when the candidates can "
                          "(0 lets the block losses alone decide)."},
    )
    exclude_ops: List[str] = field(
        default_factory=list,
        metadata={"help": "Ops the models must not use: codes (conv:3) or kinds (conv), e.g. ops a deployment "
                          "target runs slowly (default: none).", "metavar": "OP"},
    )
    rescore_batches: int = field(default=4, metadata={"help": "Validation batches for each re-scoring."})
    force: bool = field(
        default=False,
        metadata={"help": "Replace model folders of the output folder that hold more than a plain export of another "
                          "search (distilled or fine-tuned models, folders of unknown origin); by default the search "
                          "refuses to. Models of the same budget and search are kept either way."},
    )
    latency_repeats: int = field(default=10, metadata={"help": "Timed repetitions per latency measurement."})
    teacher: Optional[str] = field(default=None, metadata={"help": "Teacher (default: the run's teacher)."})
    device: Optional[str] = field(default=None, metadata={"help": "torch device for re-scoring (default: cpu)."})

    def __post_init__(self):
        self.budgets = [Budget.parse(b) if isinstance(b, str) else b for b in self.budgets]
        if not 0.0 <= self.min_budget_use <= 1.0:
            raise ValueError(f"min_budget_use={self.min_budget_use} must be between 0 and 1.")
        if self.top_k < 1 or self.rescore_batches < 1:
            raise ValueError(f"top_k={self.top_k} and rescore_batches={self.rescore_batches} must be at least 1.")


def is_finished(run_dir):
    return all((Path(run_dir) / name).is_file() for name in FINISHED_MARKERS)


def compress(training_args, search_args, install=True, distill_steps=0, distill_options=None):
    """The whole pipeline; every stage picks up where an interrupted run stopped, and a finished
    run is left as it is (its exported, distilled models are never written over).

    With `distill_steps`, every exported model is then distilled in place for that many steps
    (`distill.distill_exported`; `distill_options` are further `DistillArguments` fields). With
    `install`, the models are put in the local zoo, so that `from_pretrained("nasbert-5M")`
    works by bare name.
    """
    from .supernet_training import train_supernet

    run_dir = Path(training_args.output_dir)
    _check_search_early(training_args, search_args)
    with run_lock(search_args.out, "nasbert compress"):
        if is_finished(run_dir):
            logger.info("Supernet in %s is already trained; going straight to the search.", run_dir)
        else:
            training_args.resume = (run_dir / RUN_CONFIG_FILE).is_file()
            train_supernet(training_args)
        summary = _search_and_export(search_args)
        _distill_and_install(training_args, search_args, summary, install, distill_steps, distill_options)
    return summary


def _distill_and_install(training_args, search_args, summary, install, distill_steps, distill_options):
    """`compress`'s last stages: distil the family's models in place, then install them in the zoo."""
    run_dir = Path(training_args.output_dir)
    if distill_steps:
        from .distill import distill_exported

        # The supernet's corpus, sequence length and machine settings; its run initialises the projections.
        options = {"corpus": training_args.corpus, "seq_len": training_args.seq_len, "seed": training_args.seed,
                   "cpu": training_args.cpu, "mixed_precision": training_args.mixed_precision,
                   "cache_dir": training_args.cache_dir, "supernet_run": str(run_dir), **(distill_options or {})}
        distill_exported(search_args.out, [model["name"] for model in summary["models"]], distill_steps, **options)
    if install:
        from .zoo import install as install_model

        for model in summary["models"]:
            installed = install_model(Path(search_args.out) / model["name"], overwrite=True)
            print(f"Installed {model['name']} in the local zoo ({installed}): "
                  f"from_pretrained({model['name']!r}) now loads it.")


def run_lock(out, command):
    """`folders.folder_lock` on the output folder, so that a second run on it fails at once instead
    of training and exporting over the first. Taken by the main process only: in a distributed
    launch, the other processes are the same run."""
    if int(os.environ.get("RANK", "0")) != 0:
        return nullcontext()
    return folder_lock(out, command)


def supernet_run_of(out):
    """The supernet run a family folder was searched on: `OUT/supernet-run` for `nasbert compress`,
    else the run its `summary.json` names (`nasbert search --out OUT`)."""
    out = Path(out)
    return out / RUN_SUBDIR if (out / RUN_SUBDIR).is_dir() else Path(read_json(out / SUMMARY_FILE)["run_dir"])


def _check_search_early(training_args, search_args):
    """Unknown excluded ops, impossible parameter/FLOP budgets, and latency budgets for a device
    with neither a table in the run nor a way to measure one here, fail before the supernet
    trains, not after."""
    from .search_space import load_search_space
    from .teacher import load_teacher

    teacher = load_teacher(training_args.teacher)
    space = load_search_space(training_args.search_space, teacher.model.config)
    check_excluded_ops(search_args.exclude_ops, space)
    if not search_args.budgets:
        return
    factorization = "word" if training_args.block_projection == "teacher" else "all"
    check_budgets(search_args.budgets, space, teacher, training_args.seq_len, factorization)
    for device in {budget.device for budget in search_args.budgets if budget.metric == "latency"}:
        check_latency_source(training_args.output_dir, device, training_args.seq_len, teacher)


def auto_budgets(tables, cost_model, teacher_params, ladder=LADDER, fallback_sizes=3):
    """The paper's sizes (`LADDER`, total parameters) that the candidates can meet, up to
    `LADDER_MAX_FRACTION` of the teacher. When none fits (small teachers), a ladder of
    `fallback_sizes` budgets spaced geometrically from just above the smallest model to that same
    ceiling, or one budget halfway to the teacher when there is no room for a ladder."""
    low, high = minimum_cost(tables, cost_model), LADDER_MAX_FRACTION * teacher_params
    budgets = [Budget("params", size) for size in ladder if low <= size <= high]
    if budgets:
        return budgets
    if high <= low * 1.2:
        return [Budget("params", max(low, float(f"{(low + teacher_params) / 2:.2g}")))]
    start = low * 1.1  # room to pick among several candidates even at the smallest size
    sizes = [start * (high / start) ** (i / (fallback_sizes - 1)) for i in range(fallback_sizes)]
    return [Budget("params", _round_down(size)) for size in sizes]


def _round_down(value, digits=3):
    """`value` cut to `digits` significant digits, never above it (a budget stays under its ceiling)."""
    scale = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return math.floor(value / scale) * scale


def teacher_dimensions(teacher, supernet=None):
    """What a cost model needs of the teacher: exported models keep its vocabulary and positions,
    and models of the first design its embedding width; and of the `supernet` (when given), how its
    models factorise their embedding."""
    factorization = {"embedding_factorization": supernet.embedding_factorization} if supernet is not None else {}
    return {"embedding_size": teacher.hidden_size, **teacher.embedding_dimensions(), **factorization}


def check_budgets(budgets, space, teacher, seq_len=128, embedding_factorization="all"):
    """Fail before any training when a parameter or FLOP budget is below the smallest model the
    search space can make (latency budgets need a measured table, so they are checked later)."""
    from .architecture import Architecture
    from .search import CandidateTables, EmbeddingCandidate
    from .shrinking import Candidate

    embeddings = [EmbeddingCandidate(size, hidden, 0.0) for size in space.embedding_sizes for hidden in space.hidden_sizes]
    for budget in budgets:
        if budget.metric == "latency":
            continue
        cost_model = cost_model_for(budget, seq_len, **teacher_dimensions(teacher),
                                    embedding_factorization=embedding_factorization)

        def cheapest(hidden):  # costs add up per op, so the cheapest block repeats the cheapest op
            op = min(space.ops_for(hidden), key=lambda code: cost_model.op_cost(code, hidden))
            return Candidate(Architecture(hidden, (op,) * space.slots_per_block), 0, 0, loss=0.0)

        blocks = [[cheapest(hidden) for hidden in space.hidden_sizes]] * space.num_blocks
        smallest = minimum_cost(CandidateTables(blocks, embeddings), cost_model)
        if smallest > budget.limit:
            raise ValueError(
                f"Budget {budget} is below the smallest model this search space can make ({budget.metric} "
                f"{smallest:g}); raise the budget or add smaller hidden or embedding sizes to the space."
            )


class CachedTeacher:
    """The teacher with its block states memoised per batch, so re-scoring many candidates on the
    same validation batches runs the teacher once per batch."""

    def __init__(self, teacher):
        self.teacher = teacher
        self._states = {}

    def __getattr__(self, name):
        return getattr(self.teacher, name)

    def block_states(self, input_ids, attention_mask, num_blocks):
        key = (id(input_ids), num_blocks)
        if key not in self._states:
            self._states[key] = self.teacher.block_states(input_ids, attention_mask, num_blocks)
        return self._states[key]


def validation_batches(run_config, teacher, count):
    """The first `count` batches of the run's own validation split (the split training held out)."""
    from .data import DEFAULT_CORPUS, build_mlm_datasets, masking_rate, mlm_dataloader
    from .training import masked_inputs

    training = run_config["training"]
    splits = build_mlm_datasets(
        run_config.get("corpus") or DEFAULT_CORPUS, teacher.tokenizer, seq_len=run_config["seq_len"],
        validation_size=training["validation_size"], seed=run_config["seed"],
        max_train_sequences=training.get("max_train_sequences"), cache_dir=training.get("cache_dir"),
    )
    # The text as the supernet saw it.
    loader = mlm_dataloader(splits["validation"], teacher.tokenizer, training["eval_batch_size"], shuffle=False,
                            seed=run_config["seed"], mlm_probability=masking_rate(masked_inputs(run_config)))
    batches = []
    for batch in loader:
        if len(batches) == count:
            break
        batches.append(batch)
    return batches


def latency_table_path(run_dir, device):
    return Path(run_dir) / f"latency-{device}.json"


def check_latency_source(run_dir, device, seq_len, teacher):
    """Raise `ValueError` unless the run has a latency table for `device` or this machine can measure one."""
    path = latency_table_path(run_dir, device)
    if path.is_file():
        return
    try:
        check_device(device)
    except ValueError as error:
        if device not in RUNTIMES:
            raise  # unknown device: no command can measure it
        raise ValueError(
            f"{error} A latency budget @{device} needs the table {path}: measure it on a machine with that "
            f"device (`nasbert latency-table --device {device} --config {Path(run_dir) / RUN_CONFIG_FILE} "
            f"--seq-len {seq_len} --embedding-size {teacher.hidden_size} --vocab-size {teacher.vocab_size} "
            f"--out latency-{device}.json`) and copy it there."
        ) from None


def run_latency_table(run_dir, space, teacher, seq_len, device="cpu", repeats=10):
    """The run's latency table for `device`: `RUN/latency-<device>.json` if it is there (measured
    on the machine it describes and copied in), else measured here once and kept in the run."""
    path = latency_table_path(run_dir, device)
    if path.is_file():
        table = LatencyTable.load(path)
        wanted = {"device": device, "seq_len": seq_len, "vocab_size": teacher.vocab_size}
        wrong = {key: getattr(table, key) for key, value in wanted.items() if getattr(table, key) != value}
        if wrong:
            raise ValueError(f"{path} was measured for {wrong}, but this run needs {wanted}; measure it again.")
        return table
    check_latency_source(run_dir, device, seq_len, teacher)
    ops = sorted({code for code in space.ops if code != "id"})
    calibration = random_architectures(list(space.ops), space.hidden_sizes, space.num_slots, 12, seed=1)
    table = measure_latency_table(ops, space.hidden_sizes, device=device, batch_size=1, seq_len=seq_len,
                                  embedding_size=teacher.hidden_size, vocab_size=teacher.vocab_size, repeats=repeats,
                                  calibration=calibration)
    table.save(path)
    return table


def check_excluded_ops(excluded, space):
    """Every excluded op must be one of the space's op codes or kinds (a typo would exclude nothing)."""
    known = set(space.ops) | {parse_op(code)[0] for code in space.ops}
    unknown = [op for op in excluded if op not in known]
    if unknown:
        raise ValueError(f"Unknown op(s) {unknown} in exclude_ops: the search space's ops are {list(space.ops)} "
                         f"(a kind such as 'conv' excludes every width).")


def search_and_export(args):
    """Search every budget, re-score the top candidates, export the best; returns the summary.

    Models of `args.out` exported by the same search are kept (`kept_record`), and folders that
    hold a user's work are never replaced without `args.force` (`check_replaceable`)."""
    check_finished(args.run_dir)
    with run_lock(args.out, "nasbert search"):
        return _search_and_export(args)


def check_finished(run_dir):
    if not is_finished(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a finished supernet run (needs {' and '.join(FINISHED_MARKERS)}).")


def _search_and_export(args):
    from .plots import plot_pareto
    from .supernet import Supernet
    from .teacher import load_teacher

    run_dir = Path(args.run_dir)
    check_finished(run_dir)
    supernet, space, run_config = Supernet.from_run(run_dir, device=args.device)
    teacher = load_teacher(args.teacher or run_config["teacher"], device=args.device)
    tables = load_candidates(run_dir / CANDIDATES_FILE)
    check_excluded_ops(args.exclude_ops, space)
    tables = tables.without_ops(args.exclude_ops)
    params = cost_model_for(Budget("params", math.inf), run_config["seq_len"], **teacher_dimensions(teacher, supernet))
    budgets = _unique(args.budgets) or auto_budgets(tables, params, teacher.num_parameters())
    settings = search_settings(args, run_dir)
    out = Path(args.out)
    earlier = read_json(out / SUMMARY_FILE) if (out / SUMMARY_FILE).is_file() else {}
    records = {budget.name: kept_record(out, budget, settings, earlier, run_dir) for budget in budgets}
    missing = [budget for budget in budgets if records[budget.name] is None]
    summary = {"run_dir": str(run_dir), "run_fingerprint": settings["run_fingerprint"], "teacher": run_config["teacher"],
               "teacher_params": teacher.num_parameters(), "budgets": [str(b) for b in budgets],
               "exclude_ops": list(args.exclude_ops)}
    if not missing and earlier == {**summary, "models": [records[b.name] for b in budgets]}:
        logger.info("Models in %s are already exported (%s); keeping them.", out, SUMMARY_FILE)
        return earlier
    check_replaceable(out, [budget.name for budget in missing], args.force, run_dir)
    # CPU always (every model card reports it), and each device a latency budget names.
    devices = ["cpu"] + sorted({b.device for b in budgets if b.metric == "latency"} - {"cpu"})
    latency = {device: run_latency_table(run_dir, space, teacher, run_config["seq_len"], device, args.latency_repeats)
               for device in devices}
    for name in [budget.name for budget in budgets if budget not in missing]:
        logger.info("%s: keeping %s, the model of this search (%s).", name, out / name, records[name]["architecture"])
    if missing:
        family = FamilySearch(args, supernet, space, run_config, teacher, tables, latency, settings)
        records.update({budget.name: family.export(budget, out) for budget in missing})
    summary["models"] = [records[budget.name] for budget in budgets]
    chosen = [(m["name"], Architecture.parse(m["architecture"]), m["losses"]["approx_sum_of_block_losses"])
              for m in summary["models"]]
    plot_pareto(tables, chosen, {"parameters (all, embeddings included)": params,
                                 "predicted CPU latency (ms, batch 1)": latency["cpu"]}, out / "pareto.png")
    write_json(out / SUMMARY_FILE, summary)
    return summary


def search_settings(args, run_dir):
    """What decides the model of a budget besides the budget: the supernet run (the digest of its
    candidates) and the search arguments. Each model's `nasbert.json` records them (`search`)."""
    digest = hashlib.sha256((Path(run_dir) / CANDIDATES_FILE).read_bytes()).hexdigest()[:16]
    return {"run_fingerprint": digest, "exclude_ops": sorted(args.exclude_ops), "top_k": args.top_k,
            "min_budget_use": args.min_budget_use, "rescore_batches": args.rescore_batches,
            "rescore_teacher": args.teacher}


def kept_record(out, budget, settings, earlier, run_dir):
    """The summary record of `OUT/<budget name>` when that folder holds this search's model of
    `budget` (as exported, or distilled or fine-tuned since), else None: it must be exported."""
    folder = out / budget.name
    try:
        check_model_dir(folder)
        metadata = read_metadata(folder) or {}
    except (FileNotFoundError, ValueError):
        return None  # absent or damaged: `check_replaceable` decides whether it may be replaced
    search = metadata.get("search") or {}
    if metadata.get("budget") != str(budget):
        return None
    if "run_fingerprint" not in search:  # exported before models recorded their run: the summary vouches
        return _listed_record(budget, settings, earlier, run_dir)
    if any(search.get(key) != value for key, value in settings.items()):
        return None
    return {key: metadata.get(key) for key in SUMMARY_FIELDS}


def _listed_record(budget, settings, earlier, run_dir):
    """`budget`'s record in an `earlier` summary of the same run and excluded ops, or None."""
    same_run = "run_dir" in earlier and Path(earlier["run_dir"]).resolve() == Path(run_dir).resolve()
    same_ops = sorted(earlier.get("exclude_ops", [])) == settings["exclude_ops"]
    listed = [m for m in earlier.get("models", []) if m.get("name") == budget.name and m.get("budget") == str(budget)]
    return listed[0] if same_run and same_ops and listed else None


def check_replaceable(out, names, force, run_dir):
    """Refuse, unless `force`, to export over model folders that hold a user's work (`user_work`)."""
    held = {name: reason for name in names if (reason := user_work(out, name))}
    if held and not force:
        raise ValueError(
            "; ".join(f"{out / name} {reason}" for name, reason in held.items())
            + f". This search would replace {'it' if len(held) == 1 else 'them'} with a new export: pass --force "
            f"to replace {'it' if len(held) == 1 else 'them'}, or write the new models elsewhere with --out "
            f"(`nasbert search {run_dir} --out OTHER_FOLDER` searches the same supernet again)."
        )
    for name, reason in held.items():
        logger.warning("--force: replacing %s, which %s.", out / name, reason)


def user_work(out, name):
    """Why `OUT/<name>` holds a user's work (the end of a sentence), or None when it is absent or a
    plain export, which a search makes again in seconds."""
    from .distill import RUNS_SUBDIR
    from .training import CHECKPOINTS

    folder = out / name
    if not folder.exists():
        return None
    if (out / RUNS_SUBDIR / name / CHECKPOINTS).is_dir():
        return f"is being distilled (checkpoints in {out / RUNS_SUBDIR / name})"
    try:
        metadata = read_metadata(folder)
    except ValueError as error:
        return f"has an unreadable {METADATA_FILE} ({error})"
    if not metadata or "search" not in metadata:
        return f"was not exported by a search (its {METADATA_FILE} has no search record)"
    if metadata.get("distillation"):
        return f"holds a distilled model ({metadata['distillation'].get('steps')} steps)"
    if metadata.get("scores"):
        return f"holds a model with fine-tuning scores ({', '.join(metadata['scores'])})"
    return None


class FamilySearch:
    """Search, re-score and export the model of one budget; holds what all budgets share."""

    def __init__(self, args, supernet, space, run_config, teacher, tables, latency, settings):
        self.args, self.supernet, self.space, self.run_config = args, supernet, space, run_config
        self.teacher, self.tables, self.latency, self.settings = teacher, tables, latency, settings
        self.cached = CachedTeacher(teacher)
        self.batches = validation_batches(run_config, teacher, args.rescore_batches)
        self.teacher_copy = None  # the teacher's own weights in the supernet's form, built on first use

    def export(self, budget, out):
        """Export the best model of `budget` as `OUT/<budget name>`; returns its summary record."""
        from .distill import RUNS_SUBDIR
        from .supernet import evaluate_architecture

        args, seq_len, teacher = self.args, self.run_config["seq_len"], self.teacher
        cost_model = cost_model_for(budget, seq_len, latency_tables=self.latency,
                                    **teacher_dimensions(teacher, self.supernet))
        # Re-score the top k of *every* embedding width on the assembled models: summed block
        # losses (each block fed the teacher's states) rank whole models only approximately.
        candidates = _family_candidates(self.tables, cost_model, budget, args)
        scored = [(evaluate_architecture(self.supernet, self.cached, r.architecture, self.batches), r)
                  for r in candidates]
        loss, best = min(scored, key=lambda item: (item[0], item[1].approx_loss))
        arch = best.architecture
        source, losses = self.start_weights(arch, loss)
        model = from_supernet(source, arch, teacher)
        metadata = model_metadata(
            budget.name, arch, model.config,
            budget=str(budget),
            latency_ms=latencies(arch, self.latency, seq_len, teacher, args.latency_repeats),
            block_hidden_sizes=[block.hidden_size for block in self.space.split(arch)],
            teacher=self.run_config["teacher"],
            teacher_params=teacher.num_parameters(),
            corpus=self.run_config.get("corpus") or "embedded Wikipedia sample",
            losses={"approx_sum_of_block_losses": best.approx_loss, **losses},
            weights="teacher" if source is not self.supernet else "supernet",
            search={"space": self.run_config["search_space"], **self.settings,
                    "rescored": [{"architecture": str(r.architecture), "approx_loss": r.approx_loss,
                                  "assembled_loss": value} for value, r in scored]},
        )
        replaced = (out / budget.name).exists()
        save_model_folder(model, teacher.tokenizer, metadata, out / budget.name)
        if replaced:  # a distillation run of the model replaced cannot resume on this one
            shutil.rmtree(out / RUNS_SUBDIR / budget.name, ignore_errors=True)
        logger.info("%s: %s (assembled loss %.4f, %s weights)", budget.name, arch, losses["assembled_validation_mse"],
                    metadata["weights"])
        return {key: metadata[key] for key in SUMMARY_FIELDS}

    def start_weights(self, arch, loss):
        """`(source, losses)`: where the export takes `arch`'s weights from, and its assembled losses.

        The supernet's copy, unless `arch` is a cut of the teacher (whole sub-layers kept or
        dropped) and the teacher's own weights reproduce the teacher better on the validation
        batches: training the slices the supernet shares moves its whole layers too, so a cut
        exported from it ends up behind the same cut taken from the teacher (at 15M, 0.2 points of
        retention after the same distillation, docs/finetuning.md)."""
        from .supernet import evaluate_architecture
        from .teacher_init import keeps_whole_sublayers, untrained_copy

        losses = {"assembled_validation_mse": loss}
        if not (self.supernet.in_teacher_coordinates and keeps_whole_sublayers(self.space, arch)):
            return self.supernet, losses
        if self.teacher_copy is None:
            self.teacher_copy = untrained_copy(self.supernet, self.teacher)
        teacher_loss = evaluate_architecture(self.teacher_copy, self.cached, arch, self.batches)
        compared = {"supernet_weights_validation_mse": loss, "teacher_weights_validation_mse": teacher_loss}
        if teacher_loss < loss:
            return self.teacher_copy, {"assembled_validation_mse": teacher_loss, **compared}
        return self.supernet, {**losses, **compared}


def _family_candidates(tables, cost_model, budget, args):
    """The top k of every embedding width under `budget`, among the models that use at least
    `min_budget_use` of it; all models under it when the candidates cannot fill it that far."""
    try:
        return search(tables, cost_model, budget.limit, k=args.top_k, per_embedding_size=True,
                      floor=args.min_budget_use * budget.limit)
    except NoModelInBand:
        logger.warning("%s: no candidate model uses %.0f%% of the budget; taking the best under it.",
                       budget.name, 100 * args.min_budget_use)
        return search(tables, cost_model, budget.limit, k=args.top_k, per_embedding_size=True)


SUMMARY_FIELDS = ("name", "architecture", "params", "body_params", "embedding_size", "block_hidden_sizes", "flops",
                  "budget", "latency_ms", "losses", "weights")


def latencies(arch, tables, seq_len, teacher, repeats):
    """`nasbert.json`'s latency record: per device the table's prediction and, where this machine
    has the device, the measured time (batch 1)."""
    record = {"batch_size": 1, "seq_len": seq_len, "machine": tables["cpu"].machine}
    for device, table in tables.items():
        try:
            check_device(device)
        except ValueError:
            pass  # a table copied in from another machine: predicted only
        else:
            record[device] = round(measure_model_latency(arch, device, 1, seq_len, teacher.hidden_size,
                                                         teacher.vocab_size, repeats=repeats), 3)
        record[f"{device}_predicted"] = round(table.predict(arch), 3)
        if device != "cpu":
            record[f"{device}_machine"] = table.machine
    return record


def _unique(budgets):
    """The budgets in order without repeats; two budgets may not share a model name."""
    unique = list(dict.fromkeys(budgets))
    names = {}
    for budget in unique:
        if budget.name in names:
            raise ValueError(f"Budgets {names[budget.name]} and {budget} would both be saved as {budget.name}.")
        names[budget.name] = budget
    return unique


def format_summary(summary):
    """A markdown table of the exported models, for the terminal and the docs."""
    lines = ["| model | params (all) | body params | E | hidden per block | FLOPs (seq 128) | CPU latency (ms) "
             "| assembled loss | architecture |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in summary["models"]:
        lines.append(f"| {m['name']} | {human(m['params'])} | {human(m['body_params'])} | {m['embedding_size']} | "
                     f"{'/'.join(map(str, m['block_hidden_sizes']))} | {human(m['flops'])} | "
                     f"{m['latency_ms']['cpu']:.2f} | {m['losses']['assembled_validation_mse']:.4f} | "
                     f"`{m['architecture']}` |")
    return "\n".join(lines)

