"""Fixed block projections from the teacher's principal components (the default of supernet training).

Why. Blocks are trained apart, each fed the teacher's states, but the search and the export
chain them: block b+1 reads what block b wrote. With a learned input and output projection per
block nothing ties block b's output space to block b+1's input space, so summed block losses
say little about the assembled model (we measured searched models losing to random ones).

What. For every block boundary b (the embedding output, then each block's output) take the
teacher's hidden states `h_b` on training text, their mean `mu_b`, their principal directions
`P_b` (rows, orthonormal, by decreasing variance) and the standard deviations `S_b` along them.
Block b reads the whitened coordinates `x = S_b^-1 P_b (h_b - mu_b)` and is scored in teacher
space on `P_{b+1}^T S_{b+1} y + mu_{b+1}` against `h_{b+1}`. Because the rows of `P_{b+1}` are
orthonormal that loss is `|S_{b+1} (y - x_{b+1})|^2` plus a constant (the variance outside the
subspace): its minimum is at exactly what block b+1 was trained to read, so blocks trained
apart chain into a whole model. Losses stay in teacher space, so they compare across hidden
sizes. Whitening matters: every op ends in a LayerNorm, whose outputs have unit scale, while
the variance along principal directions spans orders of magnitude.

One rotation for every boundary (`shared=True`, the default of supernet training). The
principal directions of different teacher layers are nearly unrelated rotations of each other,
so with a basis per boundary an identity op, and every op's residual path, maps coordinate i of
`P_b` onto coordinate i of `P_{b+1}`: a meaningless map, scored worse than predicting the mean
(0.61 vs. 0.31 on block 0 of all-MiniLM-L6-v2). With one set of directions `P`, fitted on the
boundaries' covariances pooled (each scaled to unit trace so that no layer dominates), and a
mean and scales per boundary, the residual path carries each direction to itself, rescaled: the
identity then scores 0.12 there, and ops inherited from the teacher chain consistently.

Principal directions are nested (the leading H rows are the best H-dimensional subspace), which
is what leading-slice weight sharing across hidden sizes needs: a width-H student uses the
first H rows. The projections are frozen while the supernet trains; the exported model's
embedding projection and the final distillation's projections start from them and train on.
"""

import torch


class BoundaryStatistics:
    """Running first and second moments (float64) of the teacher's states at every block boundary."""

    def __init__(self, num_boundaries, width, device=None):
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.total = torch.zeros(num_boundaries, width, dtype=torch.float64, device=device)
        self.outer = torch.zeros(num_boundaries, width, width, dtype=torch.float64, device=device)

    def update(self, states, attention_mask=None):
        """Add one batch: `states` are the `B + 1` boundary tensors `(batch, seq, width)`; padding is skipped."""
        keep = None if attention_mask is None else attention_mask.to(states[0].device).bool().reshape(-1)
        for boundary, hidden in enumerate(states):
            rows = hidden.reshape(-1, hidden.shape[-1]).double()
            if keep is not None:
                rows = rows[keep]
            self.total[boundary] += rows.sum(0)
            self.outer[boundary] += rows.T @ rows
        self.count += rows.shape[0]

    def reduce(self, reduce_sum):
        """Sum the moments over processes (`reduce_sum`, e.g. `lambda t: accelerator.reduce(t, "sum")`)."""
        self.count, self.total, self.outer = (reduce_sum(t) for t in (self.count, self.total, self.outer))
        return self

    def bases(self, rows, shared=False, whiten=True):
        """`[(components (rows, width), scales (rows,), mean (width,)), ...]` per boundary, float32;
        with `shared`, the same components at every boundary, and without `whiten` one scale for
        all of a boundary's directions (see the module docstring)."""
        if self.count.item() < 2:
            raise ValueError("Fitting block projections needs the teacher's states of at least 2 tokens; got none.")
        means = self.total / self.count
        covariances = self.outer / self.count - means[:, :, None] * means[:, None, :]
        if not shared:
            return [(*principal_basis(covariance, rows), mean.float()) for covariance, mean in zip(covariances, means)]
        traces = covariances.diagonal(dim1=1, dim2=2).sum(-1).clamp(min=1e-12)
        components, _ = principal_basis((covariances / traces[:, None, None]).mean(0), rows)
        scales = [_scales_along(components, covariance) for covariance in covariances]
        if not whiten:
            scales = [torch.full_like(scale, scale.pow(2).mean().sqrt().item()) for scale in scales]
        return [(components, scale, mean.float()) for scale, mean in zip(scales, means)]


def principal_basis(covariance, rows, min_variance_ratio=1e-6):
    """`(components, scales)` of a covariance matrix: the top `rows` principal directions
    (orthonormal rows) and the standard deviation along each (floored at `min_variance_ratio` of
    the largest variance, so whitening stays finite). Each direction's sign is fixed (largest
    entry positive) so the same data always gives the same basis. Rows beyond the width are zero
    with scale 1: such student dimensions read nothing and are not scored."""
    variances, eigenvectors = torch.linalg.eigh(covariance)  # ascending, eigenvectors in columns
    variances, components = variances.flip(0)[:rows], eigenvectors.flip(-1).T[:rows]
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))
    components = components * signs
    scales = variances.clamp(min=min_variance_ratio * variances[0].clamp(min=0)).sqrt().clamp(min=1e-12)
    if rows > components.shape[0]:
        missing = rows - components.shape[0]
        components = torch.cat([components, components.new_zeros(missing, components.shape[1])])
        scales = torch.cat([scales, scales.new_ones(missing)])
    return components.float(), scales.float()


def _scales_along(components, covariance, min_variance_ratio=1e-6):
    """Standard deviations of the data of `covariance` along the rows of `components` (zero rows: 1),
    floored as `principal_basis` floors them."""
    variances = torch.einsum("rw,wv,rv->r", components.double(), covariance, components.double())
    real = components.abs().sum(1) > 0
    floor = min_variance_ratio * variances[real].max().clamp(min=0) if real.any() else 0.0
    scales = variances.clamp(min=floor).sqrt().clamp(min=1e-12)
    return torch.where(real, scales, torch.ones_like(scales)).float()


@torch.no_grad()
def fit_boundary_bases(teacher, batches, num_blocks, rows, reduce_sum=None, shared=False, whiten=True):
    """Principal bases of the teacher's states at the `num_blocks + 1` block boundaries over `batches`
    (each a dict with `input_ids` and `attention_mask`); moments are summed over processes with
    `reduce_sum` so that every process gets the same bases as a single process would. `shared`:
    one set of directions for all boundaries, with a mean and scales per boundary."""
    statistics = None
    for batch in batches:
        states = teacher.block_states(batch["input_ids"], batch["attention_mask"], num_blocks)
        if statistics is None:
            statistics = BoundaryStatistics(len(states), states[0].shape[-1], device=states[0].device)
        statistics.update(states, batch["attention_mask"])
    if statistics is None:
        raise ValueError("Fitting block projections got no batches: the training split is empty.")
    if reduce_sum is not None:
        statistics.reduce(reduce_sum)
    return statistics.bases(rows, shared=shared, whiten=whiten)
