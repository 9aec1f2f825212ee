"""The Pareto picture of a search: every sampled whole-model candidate, and the chosen models."""

import random

from .search import assemble, hidden_sizes


def sample_models(tables, count=3000, seed=0):
    """Up to `count` whole models drawn from the candidate tables, as `(architecture, approx_loss)`."""
    rng = random.Random(seed)
    models = {}
    sizes = [h for h in hidden_sizes(tables) if all(any(c.hidden_size == h for c in block) for block in tables)]
    attempts = 0
    while sizes and len(models) < count and attempts < 20 * count:
        attempts += 1
        hidden = rng.choice(sizes)
        choice = tuple(rng.choice([i for i, c in enumerate(block) if c.hidden_size == hidden]) for block in tables)
        if choice not in models:
            loss = sum(block[i].loss for block, i in zip(tables, choice))
            models[choice] = (assemble(tables, choice, hidden), loss)
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
