"""The Pareto picture of a search: every sampled whole-model candidate, and the chosen models."""

import random

from .search import approx_loss, assemble


def sample_models(tables, count=3000, seed=0):
    """Up to `count` whole models drawn from the candidate tables (`search.CandidateTables`), as
    `(architecture, approx_loss)`: an embedding choice, a block-0 candidate of its hidden size,
    then any candidate of every other block."""
    rng = random.Random(seed)
    models = {}
    starts = tables.embedding_choices()
    attempts = 0
    while len(models) < count and attempts < 20 * count:
        attempts += 1
        e_index = rng.randrange(len(starts))
        first = [i for i, c in enumerate(tables.blocks[0]) if c.arch.hidden_size == starts[e_index][1]]
        if not first:
            continue
        choice = (e_index, rng.choice(first), *(rng.randrange(len(block)) for block in tables.blocks[1:]))
        if choice not in models:
            models[choice] = (assemble(tables, choice), approx_loss(tables, choice))
    return list(models.values())


def plot_pareto(tables, chosen, cost_models, path, seed=0):
    """One panel per cost model (e.g. parameters, latency): approximate loss of sampled candidates,
    with `chosen` (a list of `(name, architecture, approx_loss)`) marked and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sample_models(tables, seed=seed)
    figure, axes = plt.subplots(1, len(cost_models), figsize=(6 * len(cost_models), 4.5), squeeze=False)
    for axis, (label, cost_model) in zip(axes[0], cost_models.items()):
        axis.scatter([cost_model.cost(a) for a, _ in models], [loss for _, loss in models], s=6, alpha=0.35,
                     color="tab:gray", label=f"candidates ({len(models)} sampled)")
        for name, arch, loss in chosen:
            cost = cost_model.cost(arch)
            axis.scatter([cost], [loss], s=60, color="tab:red", zorder=3)
            axis.annotate(name, (cost, loss), textcoords="offset points", xytext=(5, 5), fontsize=8)
        axis.set_xlabel(label)
        axis.set_ylabel("approximate loss (sum of block validation MSE)")
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right", fontsize=8)
    figure.suptitle("NAS-BERT search: candidates and chosen models")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
