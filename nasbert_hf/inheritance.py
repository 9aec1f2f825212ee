"""Supernet ops that start from the teacher's weights (pruning plus distillation, as in Minitron).

Why. A randomly initialised supernet spends its first steps learning what the teacher already
knows. Every supernet op has a teacher counterpart: slot s of block b replaces a sub-layer of
one of the teacher layers that block b distils (`Teacher.block_boundaries`), so its weights can
start as the teacher's, pruned to the op's size, mapped into the coordinates the student works in.

What.

- `teacher_importance(teacher, batches)` measures, on the corpus and over real tokens only, how
  much every attention head and every FFN neuron of every teacher layer contributes to the
  residual stream: the mean L2 norm of the head's output through the attention output dense
  layer, `|W_o[:, head] context_head|`, and for a neuron `|activation| * |W_out[:, neuron]|`
  (the norm of its contribution through the output dense layer). Same unit for both.
- `inherit_from_teacher(supernet, teacher, bases, importance)` copies, for every slot, the
  teacher's attention into the slot's `mha` op and the teacher's feed-forward into its `ffn` op,
  heads and neurons sorted by decreasing importance so that every leading slice (fewer heads at a
  smaller width, a smaller inner size) keeps the most important ones. Slot s of a block of
  `n` teacher layers and `k` slots maps to layer `start + s * n // k` (tiny preset: slots
  mha, ffn, mha, ffn of a block line up with the two layers' sub-layers).

Coordinates. Supernet blocks read and write whitened principal coordinates of the teacher's
states (`projections.py`): `x = S^-1 P (h - mu)`, so `h ~ P^T S x + mu`. An input map `W h + c`
becomes `(W P^T S) x + (W mu + c)`; a residual update `u = W_o z + c_o` becomes
`S^-1 P (W_o z + c_o)`. Which basis an op uses: with `layer_bases` (the principal bases of the
teacher's states at every layer input, `fit_layer_bases`; recommended) the ops of layer l use
layer l's basis; without, every op of block b uses block b's input basis. The principal bases of
consecutive layers are nearly unrelated coordinate systems and post-LN residual ops cannot rotate
their residual stream, so per-layer bases spread that change of basis over the layer boundaries:
they start and train better (docs/supernet.md, "Inheriting the teacher's weights"). LayerNorms start at weight 1,
bias 0: whitened coordinates have unit scale, as LayerNorm outputs do. The teacher's LayerNorm
gains live in teacher coordinates and have no counterpart there.

Attention heads. Teacher heads are laid out one after another (most important first) in the
query, key and value rows, so a student head of `H / h` dims spans `H / (h * teacher_head_size)`
teacher heads that then share one softmax: their logits add. SDPA scales by
`1 / sqrt(head_dim)`, so a merged head's logits are the teacher's summed logits times
`sqrt(teacher_head_size / head_dim)`; `query_scale` multiplies the query weights on top of that.

What is left alone: ops with no counterpart (convolutions, identity) and any dimension beyond the
teacher's (a hidden or inner size, or more query dims, than the teacher has) keep their random
initialisation, as do the block projections (`Supernet.fit_projections` sets them).
"""

from dataclasses import dataclass

import torch

from .projections import fit_boundary_bases


@dataclass
class TeacherImportance:
    """Importance of every head (`heads`, `(layers, num_heads)`) and FFN neuron (`neurons`,
    `(layers, intermediate_size)`) of a teacher, in the same unit (mean norm of the contribution
    to the residual stream per real token), measured over `tokens` tokens."""

    heads: torch.Tensor
    neurons: torch.Tensor
    tokens: int

    def head_order(self, layer):
        """Head indices of `layer`, most important first (ties keep the teacher's order)."""
        return torch.argsort(self.heads[layer], descending=True, stable=True)

    def neuron_order(self, layer):
        """FFN neuron indices of `layer`, most important first (ties keep the teacher's order)."""
        return torch.argsort(self.neurons[layer], descending=True, stable=True)


@torch.no_grad()
def teacher_importance(teacher, batches, reduce_sum=None):
    """Importance of every attention head and FFN neuron of `teacher`, measured on `batches`
    (dicts with `input_ids` and `attention_mask`); padding tokens are skipped. `reduce_sum` sums the
    statistics over processes, so that every process count ranks the same way. Raises ValueError
    for a teacher without BERT-style layers (`Teacher.layer`) and when `batches` is empty."""
    layers = [teacher.layer(index) for index in range(teacher.num_layers)]
    heads = torch.zeros(len(layers), layers[0].num_heads, dtype=torch.float64)
    activations = torch.zeros(len(layers), layers[0].intermediate.out_features, dtype=torch.float64)
    keep = {}  # the real-token mask of the batch being run, flattened

    def real_tokens(inputs):
        rows = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
        return rows if keep["mask"] is None else rows[keep["mask"].to(rows.device)]

    def head_hook(index, layer):
        weight = layer.attention_output.weight.float()  # (hidden, heads * head_size)
        weight = weight.view(weight.shape[0], layer.num_heads, layer.head_size)

        def hook(module, inputs):
            context = real_tokens(inputs).view(-1, layer.num_heads, layer.head_size)
            for chunk in context.split(1024):  # (tokens, heads, hidden) stays small
                contribution = torch.einsum("nhd,ohd->nho", chunk, weight)
                heads[index] += contribution.norm(dim=-1).sum(0).double().cpu()

        return hook

    def neuron_hook(index):
        def hook(module, inputs):
            activations[index] += real_tokens(inputs).abs().sum(0).double().cpu()

        return hook

    handles = []
    for index, layer in enumerate(layers):
        handles.append(layer.attention_output.register_forward_pre_hook(head_hook(index, layer)))
        handles.append(layer.output.register_forward_pre_hook(neuron_hook(index)))
    tokens = 0
    try:
        for batch in batches:
            mask = batch.get("attention_mask")
            keep["mask"] = None if mask is None else mask.bool().reshape(-1)
            tokens += int(batch["input_ids"].numel() if mask is None else mask.sum())
            teacher.forward(batch["input_ids"], mask)
    finally:
        for handle in handles:
            handle.remove()
    if reduce_sum is not None:
        heads, activations = reduce_sum(heads), reduce_sum(activations)
        tokens = int(reduce_sum(torch.tensor([tokens], dtype=torch.float64)).item())
    if tokens == 0:
        raise ValueError("teacher_importance got no tokens: the batches are empty.")
    output_norms = torch.stack([layer.output.weight.double().norm(dim=0).cpu() for layer in layers])
    return TeacherImportance(
        heads=(heads / tokens).float(), neurons=(activations * output_norms / tokens).float(), tokens=tokens
    )


def fit_layer_bases(teacher, batches, rows, reduce_sum=None, shared=False, whiten=True):
    """Principal bases (`projections.fit_boundary_bases`) of the teacher's states at every layer
    input and the final output: `num_layers + 1` entries, for `inherit_from_teacher(layer_bases=...)`;
    `shared`: one set of directions for all of them, a mean and scales per layer."""
    return fit_boundary_bases(teacher, batches, teacher.num_layers, rows, reduce_sum=reduce_sum, shared=shared,
                              whiten=whiten)


def slot_layers(supernet, teacher):
    """`[[teacher layer of each slot] per block]`: slot s of a block covering teacher layers
    `[start, end)` with k slots replaces a sub-layer of layer `start + s * (end - start) // k`."""
    boundaries = teacher.block_boundaries(len(supernet.blocks))
    mapping = []
    for block, start, end in zip(supernet.blocks, boundaries[:-1], boundaries[1:]):
        slots = len(block.slots)
        mapping.append([start + slot * (end - start) // slots for slot in range(slots)])
    return mapping


@torch.no_grad()
def inherit_from_teacher(supernet, teacher, bases, importance, layer_bases=None, query_scale=1.0):
    """Initialise every `mha` and `ffn` op of `supernet` from the teacher sub-layer it replaces.

    `bases`: the `B + 1` block-boundary bases given to `Supernet.fit_projections` (components,
    scales, mean); `importance`: `teacher_importance(teacher, batches)`. `layer_bases`
    (`fit_layer_bases(teacher, batches, max_hidden_size)`, the `num_layers + 1` bases at the layer
    inputs; recommended, measured better) gives the ops of teacher layer l layer l's basis; the
    block bases are then `layer_bases[l]` at `l in teacher.block_boundaries(B)`, so one teacher
    pass fits both. Without it every op of block b reads and writes block b's input basis.
    `query_scale` multiplies the inherited query weights and biases. Returns the list of
    `(block, slot, op key, teacher layer)` that were initialised.
    """
    num_blocks = len(supernet.blocks)
    if len(bases) != num_blocks + 1:
        raise ValueError(f"Got {len(bases)} boundary bases for {num_blocks} blocks; expected {num_blocks + 1}.")
    if layer_bases is not None and len(layer_bases) != teacher.num_layers + 1:
        raise ValueError(
            f"Got {len(layer_bases)} layer bases for a teacher with {teacher.num_layers} layers; "
            f"expected {teacher.num_layers + 1} (fit_layer_bases)."
        )
    if importance.heads.shape[0] != teacher.num_layers:
        raise ValueError(
            f"The importance scores cover {importance.heads.shape[0]} layers; the teacher has {teacher.num_layers}."
        )
    done = []
    for block_index, (block, layers) in enumerate(zip(supernet.blocks, slot_layers(supernet, teacher))):
        for slot_index, (slot, layer_index) in enumerate(zip(block.slots, layers)):
            basis = bases[block_index] if layer_bases is None else layer_bases[layer_index]
            layer = teacher.layer(layer_index)
            for key, op in slot.ops.items():
                if key == "mha":
                    _inherit_attention(op, layer, basis, importance.head_order(layer_index), query_scale)
                elif key == "ffn":
                    _inherit_feed_forward(op, layer, basis, importance.neuron_order(layer_index))
                else:
                    continue
                done.append((block_index, slot_index, key, layer_index))
    return done


class _Basis:
    """Maps between teacher coordinates h and the student's whitened coordinates x (float64)."""

    def __init__(self, basis, teacher_width):
        components, scales, mean = (tensor.detach().double().cpu() for tensor in basis)
        if components.shape[1] != teacher_width or mean.shape != (teacher_width,):
            raise ValueError(
                f"Basis of shape {tuple(components.shape)} (mean {tuple(mean.shape)}) does not fit a teacher "
                f"of width {teacher_width}."
            )
        self.width = min(components.shape[0], teacher_width)  # student coordinates with a teacher direction
        self.components, self.scales, self.mean = components[: self.width], scales[: self.width], mean

    def read(self, weight, bias):
        """`W h + c` on `h = P^T S x + mu`: `(W P^T S, W mu + c)`, weight `(out, width)`."""
        weight, bias = weight.double().cpu(), bias.double().cpu()
        return weight @ (self.components.T * self.scales), weight @ self.mean + bias

    def write(self, weight, bias):
        """A residual update `W z + c` in student coordinates: `(S^-1 P W, S^-1 P c)`, weight `(width, in)`."""
        whiten = self.components / self.scales[:, None]
        return whiten @ weight.double().cpu(), whiten @ bias.double().cpu()


def _copy(target, value):
    """Copy `value` into the leading slice of `target` (same number of dims)."""
    target[tuple(slice(0, size) for size in value.shape)].copy_(value.to(target))


def _reset_norm(op):
    op.LayerNorm.weight.fill_(1.0)
    op.LayerNorm.bias.zero_()


def _inherit_attention(op, layer, basis, head_order, query_scale):
    basis = _Basis(basis, layer.query.in_features)
    width = min(basis.width, op.query.in_features)
    size = layer.head_size
    dims = torch.cat([torch.arange(head * size, (head + 1) * size) for head in head_order.tolist()])
    dims = dims[: op.query.out_features]  # student query/key/value dims with a teacher head dim
    for source, target, scale in (
        (layer.query, op.query, query_scale), (layer.key, op.key, 1.0), (layer.value, op.value, 1.0)
    ):
        weight, bias = basis.read(source.weight[dims], source.bias[dims])
        _copy(target.weight, weight[:, :width] * scale)
        _copy(target.bias, bias * scale)
    weight, bias = basis.write(layer.attention_output.weight[:, dims], layer.attention_output.bias)
    _copy(op.output.weight, weight[: op.output.out_features])
    _copy(op.output.bias, bias[: op.output.out_features])
    _reset_norm(op)


def _inherit_feed_forward(op, layer, basis, neuron_order):
    basis = _Basis(basis, layer.intermediate.in_features)
    width = min(basis.width, op.intermediate.in_features)
    neurons = neuron_order[: op.intermediate.out_features]
    weight, bias = basis.read(layer.intermediate.weight[neurons], layer.intermediate.bias[neurons])
    _copy(op.intermediate.weight, weight[:, :width])
    _copy(op.intermediate.bias, bias)
    weight, bias = basis.write(layer.output.weight[:, neurons], layer.output.bias)
    _copy(op.output.weight, weight[: op.output.out_features])
    _copy(op.output.bias, bias[: op.output.out_features])
    _reset_norm(op)
