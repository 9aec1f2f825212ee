"""The supernet that starts as the teacher (`block_projection="teacher"`).

Why. A student that starts from random weights spends its short training learning what the
teacher already knows, and loses to a plain cut of the teacher (some of its layers kept, its
word table factorised) that had no training at all. So the teacher itself is a member of the
search space and every op starts as the teacher sub-layer it replaces:

- Slot s of a block covering teacher layers `[start, end)` holds the sub-layers of layer
  `start + s * (end - start) // k` (`slot_layers`; with typed slots `[mha, ffn]`
  slot 2i is layer i's attention and slot 2i+1 its feed-forward). Its `mha` op is that layer's
  attention and its `ffn` op that layer's feed-forward, in the teacher's own coordinates, with
  the teacher's LayerNorm.
- Heads and neurons are sorted by decreasing importance (`teacher_importance`: on the corpus and
  over real tokens only, the mean L2 norm of each head's output through the attention output
  dense layer, `|W_o[:, head] context_head|`, and for a neuron `|activation| * |W_out[:, neuron]|`,
  the norm of its contribution to the residual stream: one unit for both), so
  `mha:kxD` keeps the k most important heads and `ffn:D` the D most important neurons. The sort
  permutes the teacher's units without changing what the full op computes.
- The embedding is the teacher's with its word table factorised: every word vector is written
  in the principal directions of the table, each token weighted by its count in the run's
  corpus, so frequent tokens are kept almost exactly at small E and rare ones lose what they
  rarely use. With E equal to the teacher's width nothing is lost.

The teacher's architecture sliced out of the untrained supernet is therefore the teacher, and
every cut of it is a candidate from the first step (`tests/test_teacher_init.py`).
"""

from dataclasses import dataclass

import torch


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
def corpus_token_counts(batches, vocab_size, reduce_sum=None):
    """How often every token id occurs among the real tokens of `batches` (masked-LM batches: a
    masked position counts its original token, from `labels`), as a float64 `(vocab_size,)`."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for batch in batches:
        ids = batch["input_ids"]
        if "labels" in batch:
            ids = torch.where(batch["labels"] != -100, batch["labels"], ids)
        mask = batch.get("attention_mask")
        ids = ids[mask.bool()] if mask is not None else ids.reshape(-1)
        counts += torch.bincount(ids.cpu().reshape(-1), minlength=vocab_size)[:vocab_size].double()
    if reduce_sum is not None:
        counts = reduce_sum(counts).cpu()
    if counts.sum() == 0:
        raise ValueError("corpus_token_counts got no tokens: the batches are empty.")
    return counts


def frequency_weighted_directions(table, counts):
    """`(components, mean)` of the rows of `table` (vocab x width), each row weighted by its
    token's count: the weighted mean and the principal directions of the weighted covariance
    (rows of `components`, orthonormal, by decreasing variance). Projecting each row on the
    leading E directions is the rank-E approximation that is best on the corpus's tokens: its
    error is the squared norm of `sqrt(count) * (row - approximation)` summed over tokens."""
    table = table.detach().double().cpu()
    weights = counts.double().cpu()
    mean = weights @ table / weights.sum()
    centered = table - mean
    covariance = (centered * weights[:, None]).T @ centered / weights.sum()
    variances, vectors = torch.linalg.eigh(covariance)
    order = torch.argsort(variances, descending=True)
    return vectors[:, order].T.contiguous(), mean


@torch.no_grad()
def start_from_teacher(supernet, teacher, importance, counts):
    """Set every `mha`/`ffn` op of `supernet` to the teacher sub-layer it replaces (heads and
    neurons by decreasing `importance`) and its embedding to the teacher's with the word table
    factorised by `counts` (`corpus_token_counts`). Convolutions keep their initialisation.
    Returns `(block, slot, op key, teacher layer)` for every op set."""
    if not supernet.in_teacher_coordinates:
        raise ValueError("start_from_teacher needs a supernet in teacher coordinates (block_projection='teacher').")
    done = []
    for block_index, (block, layers) in enumerate(zip(supernet.blocks, slot_layers(supernet, teacher))):
        for slot_index, (slot, layer_index) in enumerate(zip(block.slots, layers)):
            layer = teacher.layer(layer_index)
            for key, op in slot.ops.items():
                if key == "mha":
                    _copy_attention(op, layer, importance.head_order(layer_index))
                elif key == "ffn":
                    _copy_feed_forward(op, layer, importance.neuron_order(layer_index))
                else:
                    continue
                done.append((block_index, slot_index, key, layer_index))
    if supernet.embeddings is not None:
        _copy_embeddings(supernet.embeddings, teacher.embeddings(), counts)
    return done


def _copy_attention(op, layer, head_order):
    if op.head_size != layer.head_size or op.num_heads > layer.num_heads:
        raise ValueError(
            f"The supernet's attention ({op.num_heads} heads of {op.head_size} dims) is not a slice of the teacher's "
            f"({layer.num_heads} heads of {layer.head_size} dims): use 'mha:teacher/k' ops."
        )
    size = layer.head_size
    dims = torch.cat([torch.arange(head * size, (head + 1) * size) for head in head_order.tolist()])
    dims = dims[: op.query.out_features]
    for source, target in ((layer.query, op.query), (layer.key, op.key), (layer.value, op.value)):
        target.weight.copy_(source.weight[dims])
        target.bias.copy_(source.bias[dims])
    op.output.weight.copy_(layer.attention_output.weight[:, dims])
    op.output.bias.copy_(layer.attention_output.bias)
    op.LayerNorm.load_state_dict(layer.attention_norm.state_dict())


def _copy_feed_forward(op, layer, neuron_order):
    if op.inner_size > layer.intermediate.out_features:
        raise ValueError(
            f"The supernet's feed-forward ({op.inner_size} neurons) is larger than the teacher's "
            f"({layer.intermediate.out_features}): use 'ffn:teacher/k' ops."
        )
    neurons = neuron_order[: op.intermediate.out_features]
    op.intermediate.weight.copy_(layer.intermediate.weight[neurons])
    op.intermediate.bias.copy_(layer.intermediate.bias[neurons])
    op.output.weight.copy_(layer.output.weight[:, neurons])
    op.output.bias.copy_(layer.output.bias)
    op.LayerNorm.load_state_dict(layer.output_norm.state_dict())


def _copy_embeddings(target, source, counts):
    table = source.word_embeddings.weight
    components, mean = frequency_weighted_directions(table, counts)
    rows = components[: target.word_embeddings.weight.shape[1]]
    target.word_embeddings.weight.copy_(((table.double().cpu() - mean) @ rows.T).to(table))
    target.projection.weight.copy_(rows.T)
    target.projection.bias.copy_(mean)
    target.rotation.copy_(rows)
    for name in ("position_embeddings", "token_type_embeddings", "LayerNorm"):
        getattr(target, name).load_state_dict(getattr(source, name).state_dict())


# -- cuts of the teacher: the baseline the search has to beat ------------------------------------


def teacher_cut_layers(num_layers, count):
    """`count` of a teacher's `num_layers` layers: the first and the last and evenly spaced ones
    between (one layer: the last, which a cut keeps first: it writes the states heads read)."""
    if not 1 <= count <= num_layers:
        raise ValueError(f"A cut keeps 1 to {num_layers} layers, not {count}.")
    if count == 1:
        return [num_layers - 1]
    return sorted({round(i * (num_layers - 1) / (count - 1)) for i in range(count)})


def teacher_cut(space, slot_layers_of_blocks, layers, embedding_size):
    """The architecture of `space` that keeps the teacher's `layers` whole (every slot of a kept
    layer holds its full op, every other slot `id`) with an `embedding_size`-wide word table.
    `slot_layers_of_blocks` is `slot_layers(supernet, teacher)`; the space's slots must be
    typed (`slot_kinds`), so that each slot is one sub-layer."""
    from .architecture import Architecture
    from .supernet import largest_ops

    if not space.slot_kinds:
        raise ValueError("A teacher cut needs a space with typed slots (slot_kinds), one teacher sub-layer a slot.")
    full = largest_ops(space)  # a teacher sub-layer whole
    hidden = space.hidden_sizes[-1]
    blocks = []
    for block_layers in slot_layers_of_blocks:
        codes = [full[space.slot_kinds[s % len(space.slot_kinds)]] if layer in layers else "id"
                 for s, layer in enumerate(block_layers)]
        blocks.append(Architecture(hidden, tuple(codes)))
    return space.join(blocks, embedding_size)


def largest_teacher_cut(space, slot_layers_of_blocks, num_layers, cost_model, limit):
    """The cut (`teacher_cut`) with as many layers as fit under `limit` (`cost_model`'s units), then
    the widest embedding of the space that fits; None when not even one layer fits."""
    for count in range(num_layers, 0, -1):
        layers = teacher_cut_layers(num_layers, count)
        fitting = [arch for arch in (teacher_cut(space, slot_layers_of_blocks, layers, size)
                                     for size in space.embedding_sizes) if cost_model.cost(arch) <= limit]
        if fitting:
            return fitting[-1]
    return None


def keeps_whole_sublayers(space, arch):
    """Whether every op of `arch` is a whole teacher sub-layer (the space's largest op of its kind)
    or `id`: a cut of the teacher, whose weights `untrained_copy` gives in any unit order."""
    from .supernet import largest_ops

    whole = set(largest_ops(space).values())
    return all(code == "id" or code in whole for code in arch.layers)


@torch.no_grad()
def untrained_copy(supernet, teacher):
    """A supernet like `supernet` (teacher coordinates) whose ops are the teacher's own again, in
    the teacher's unit order, with `supernet`'s (untrained) factorised embedding: the source of
    teacher cuts, which keep whole layers, so the order of heads and neurons does not matter."""
    from .supernet import Supernet

    copy = Supernet(supernet.search_space, **supernet.init_kwargs()).to(supernet.device)
    first = teacher.layer(0)
    unsorted = TeacherImportance(heads=torch.zeros(teacher.num_layers, first.num_heads),
                                 neurons=torch.zeros(teacher.num_layers, first.intermediate.out_features), tokens=0)
    start_from_teacher(copy, teacher, unsorted, torch.ones(teacher.vocab_size))
    copy.embeddings.load_state_dict(supernet.embeddings.state_dict())
    return copy.eval()
