"""The weight-sharing supernet: every op of every slot at its largest width, sampled by slicing.

Each slot owns one module per op *family*, built once at the largest hidden size with the
op classes of `modeling_nasbert`: one attention module shared by every head count, one
feed-forward module at the largest inner size shared by every inner size (leading slice),
one separable convolution per kernel size, and identity. A sampled op runs that module with
`num_heads` / `inner_size` set for the duration of the call (`sampled`, a context manager)
and an input of the sampled hidden width, so it runs exactly the code, on exactly the leading
slices, of the standalone model it exports to. Weights are never copied while training.

Blocks (`SupernetBlock`) add an input projection `Linear(teacher_hidden, Hmax)` and an output
projection `Linear(Hmax, teacher_hidden)`, used as leading slices for a sampled width H. With
`block_projection="teacher"` (the presets' choice) the blocks work at the teacher's width in the
teacher's own coordinates: both projections are the identity, every op starts as the teacher's
sub-layer it replaces and the embedding as the teacher's with a factorised word table
(`teacher_init.py`), so the teacher and every cut of it are candidates from the first step.
With `"pca"` they are fixed, frozen maps from the teacher's principal components, which makes
blocks trained apart at narrower widths chain into whole models (`projections.py` says why);
with `"learned"` they are trained with the block.
"""

import itertools
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

from .architecture import Architecture
from .blockwise import BlockwiseStudent, blockwise_losses, masked_mse, masked_sse
from .folders import RUN_CONFIG_FILE, SUPERNET_WEIGHTS_FILE, atomic_path, read_json
from .modeling import NasBertConfig, parse_attention, parse_op
from .modeling.modeling_nasbert import build_op, key_mask_from, resize_hidden, sliced_layer_norm, sliced_linear
from .search_space import SearchSpace

BLOCK_PROJECTIONS = ("teacher", "pca", "learned")


def check_block_projection(value):
    if value not in BLOCK_PROJECTIONS:
        raise ValueError(f"block_projection={value!r}: expected one of {', '.join(BLOCK_PROJECTIONS)}.")


@contextmanager
def sampled(module, **attributes):
    """Run `module` with some attributes (`num_heads`, `inner_size`) set, and restore them after."""
    saved = {name: getattr(module, name) for name in attributes}
    for name, value in attributes.items():
        setattr(module, name, value)
    try:
        yield module
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def largest_ops(space):
    """The op code each shared module is built at: the most heads (of the space's head size, for
    `mha:HxD` codes) and the largest inner size."""
    attention = [parse_attention(code) for code in space.ops if parse_op(code)[0] == "mha"]
    head_sizes = {head_size for _, head_size in attention}
    if len(head_sizes) > 1:
        raise ValueError(
            f"ops={list(space.ops)}: every attention op of a space shares one head size (all 'mha:H', or all "
            "'mha:HxD' with the same D), because one attention module serves them all."
        )
    heads = space.max_size("mha")
    head_size = head_sizes.pop() if head_sizes else None
    mha = f"mha:{heads}" if head_size is None else f"mha:{heads}x{head_size}"
    return {"mha": mha, "ffn": f"ffn:{space.max_size('ffn')}"}


def op_key(code):
    """Which module of a slot serves an op code: `mha:4 -> "mha"`, `ffn:512 -> "ffn"`, `conv:5 -> "conv5"`."""
    kind, size = parse_op(code)
    return f"conv{size}" if kind == "conv" else kind


class SupernetSlot(nn.Module):
    """One op slot holding every op of the search space at its largest width."""

    def __init__(self, space, config):
        super().__init__()
        self.ops = nn.ModuleDict()
        largest = largest_ops(space)
        for code in space.ops:
            key = op_key(code)
            if key != "id" and key not in self.ops:
                self.ops[key] = build_op(largest.get(key, code), config)

    def forward(self, hidden_states, key_mask, code):
        kind, size = parse_op(code)
        if kind == "id":
            return hidden_states
        attributes = {"mha": {"num_heads": size}, "ffn": {"inner_size": size}}.get(kind, {})
        with sampled(self.ops[op_key(code)], **attributes) as op:
            return op(hidden_states, key_mask)[0]


class SupernetBlock(nn.Module):
    """The slots of one block between an input and an output projection (all at the largest width)."""

    def __init__(self, space, config, teacher_hidden_size):
        super().__init__()
        self.input_projection = nn.Linear(teacher_hidden_size, config.hidden_size)
        self.slots = nn.ModuleList(SupernetSlot(space, config) for _ in range(space.slots_per_block))
        self.output_projection = nn.Linear(config.hidden_size, teacher_hidden_size)

    def encode(self, hidden_states, key_mask, layers):
        for slot, code in zip(self.slots, layers, strict=True):
            hidden_states = slot(hidden_states, key_mask, code)
        return hidden_states

    def forward(self, teacher_input, key_mask, arch):
        hidden = sliced_linear(teacher_input, self.input_projection, arch.hidden_size)
        return sliced_linear(self.encode(hidden, key_mask, arch.layers), self.output_projection)


class SupernetEmbeddings(nn.Module):
    """The searched embedding, trained like one more block: token, position and token-type tables
    at the largest embedding width E, a LayerNorm, and a projection to block 0's width H, used as
    leading slices for a sampled `(E, H)`. Its target is the teacher's embedding output in block
    0's input coordinates, and it is scored in teacher space through `output_projection` (the
    inverse of block 0's input projection, frozen), so its loss adds to the blocks' losses."""

    def __init__(self, vocab_size, max_positions, type_vocab_size, embedding_size, hidden_size, teacher_hidden_size,
                 layer_norm_eps):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, embedding_size)
        self.position_embeddings = nn.Embedding(max_positions, embedding_size)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, embedding_size)
        self.LayerNorm = nn.LayerNorm(embedding_size, eps=layer_norm_eps)
        self.projection = nn.Linear(embedding_size, hidden_size)
        self.output_projection = nn.Linear(hidden_size, teacher_hidden_size).requires_grad_(False)
        # The token table stays at its teacher initialisation while the supernet trains: a dense
        # AdamW update of vocab x E weights nearly doubled a CPU step; the exported models train it.
        self.word_embeddings.requires_grad_(False)
        # Rows: the teacher-space directions the leading embedding features start on (`init_embeddings`);
        # the exported MLM head maps teacher space back onto them.
        self.register_buffer("rotation", torch.eye(embedding_size, teacher_hidden_size))

    def forward(self, input_ids, embedding_size, hidden_size):
        """Block 0's input (width `hidden_size`) from `input_ids`, through the leading `embedding_size` features."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        width = slice(0, embedding_size)
        x = (F.embedding(input_ids, self.word_embeddings.weight[:, width])
             + self.position_embeddings.weight[positions, width]
             + self.token_type_embeddings.weight[0, width])
        return sliced_linear(sliced_layer_norm(x, self.LayerNorm), self.projection, hidden_size)

    def predict(self, input_ids, embedding_size, hidden_size):
        """The embedding's output mapped back to the teacher's embedding space (what its loss scores)."""
        return sliced_linear(self(input_ids, embedding_size, hidden_size), self.output_projection)


class TeacherEmbeddings(nn.Module):
    """The searched embedding of a supernet in teacher coordinates: the teacher's embedding with
    its word table factorised. The table holds every token's coordinates along principal
    directions of the teacher's word vectors (weighted by corpus frequency, `teacher_init.py`), and
    `projection` maps the leading E of them back (`P^T`, bias: the weighted mean); positions, token
    types and the LayerNorm are the teacher's, at its width. All E choices share these weights
    (leading slices); with E equal to the width the product is the teacher's table exactly. It is
    not trained in the supernet (its loss only ranks the widths); exported models train it."""

    def __init__(self, vocab_size, max_positions, type_vocab_size, embedding_size, hidden_size, layer_norm_eps):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, embedding_size)
        self.projection = nn.Linear(embedding_size, hidden_size)
        self.position_embeddings = nn.Embedding(max_positions, hidden_size)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        # Rows: the teacher-space directions of the leading table features (the exported MLM head
        # maps teacher space back onto them, as for `SupernetEmbeddings`).
        self.register_buffer("rotation", torch.eye(embedding_size, hidden_size))
        self.requires_grad_(False)

    def forward(self, input_ids, embedding_size, hidden_size):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        words = sliced_linear(F.embedding(input_ids, self.word_embeddings.weight[:, :embedding_size]), self.projection)
        x = words + self.position_embeddings.weight[positions] + self.token_type_embeddings.weight[0]
        return F.layer_norm(x, (hidden_size,), self.LayerNorm.weight, self.LayerNorm.bias, self.LayerNorm.eps)

    predict = forward  # teacher coordinates are the teacher's embedding space


class Supernet(nn.Module):
    """The supernet of a `SearchSpace` distilled from a teacher of width `teacher_hidden_size`.

    `forward(hidden_states, attention_mask, block_archs)` takes the teacher's `B + 1` block
    boundary states and one sampled candidate per block, and returns the `(B,)` block losses.
    """

    def __init__(
        self,
        search_space,
        teacher_hidden_size,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        dropout=0.0,
        initializer_range=0.02,
        block_projection="learned",
        vocab_size=None,
        max_position_embeddings=512,
        type_vocab_size=2,
    ):
        super().__init__()
        check_block_projection(block_projection)
        self.search_space = search_space
        self.block_projection = block_projection
        self.teacher_hidden_size = teacher_hidden_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        config = self.op_config(search_space.max_hidden_size)
        self.blocks = nn.ModuleList(
            SupernetBlock(search_space, config, teacher_hidden_size) for _ in range(search_space.num_blocks)
        )
        self.embeddings = self._build_embeddings()
        self.apply(self._init_weights)
        if block_projection != "learned":  # fixed maps: set by `fit_projections`, or the identity
            for block in self.blocks:
                block.input_projection.requires_grad_(False)
                block.output_projection.requires_grad_(False)
        if block_projection == "teacher":
            self._set_identity_projections()

    @property
    def in_teacher_coordinates(self):
        return self.block_projection == "teacher"

    @property
    def embedding_factorization(self):
        """What exported models factorise (`NasBertConfig.embedding_factorization`)."""
        return "word" if self.in_teacher_coordinates else "all"

    @property
    def trains_embedding(self):
        return self.embeddings is not None and any(p.requires_grad for p in self.embeddings.parameters())

    @torch.no_grad()
    def _set_identity_projections(self):
        if self.search_space.hidden_sizes != (self.teacher_hidden_size,):
            raise ValueError(
                f"block_projection='teacher' works at the teacher's width in its coordinates: hidden_sizes must be "
                f"[{self.teacher_hidden_size}], got {list(self.search_space.hidden_sizes)} (write [teacher] in the preset)."
            )
        for block in self.blocks:
            for projection in (block.input_projection, block.output_projection):
                projection.weight.copy_(torch.eye(self.teacher_hidden_size))
                projection.bias.zero_()

    def _build_embeddings(self):
        space = self.search_space
        if not space.embedding_sizes:
            return None
        if self.block_projection == "learned" or not self.vocab_size:
            raise ValueError(
                f"Searching embedding_sizes={list(space.embedding_sizes)} needs block_projection 'teacher' or 'pca' (the "
                "embedding is scored in block 0's coordinates) and the teacher's vocab_size; got "
                f"block_projection={self.block_projection!r}, vocab_size={self.vocab_size!r}."
            )
        if space.max_embedding_size > self.teacher_hidden_size:
            raise ValueError(
                f"embedding_sizes={list(space.embedding_sizes)}: the largest exceeds the teacher's width "
                f"{self.teacher_hidden_size}; student embeddings start from the teacher's leading principal directions."
            )
        if self.in_teacher_coordinates:
            return TeacherEmbeddings(self.vocab_size, self.max_position_embeddings, self.type_vocab_size,
                                     space.max_embedding_size, self.teacher_hidden_size, self.layer_norm_eps)
        return SupernetEmbeddings(self.vocab_size, self.max_position_embeddings, self.type_vocab_size,
                                  space.max_embedding_size, space.max_hidden_size, self.teacher_hidden_size,
                                  self.layer_norm_eps)

    def embedding_candidates(self):
        """Every `(embedding_size, hidden_size)` the embedding can take (empty without embedding search)."""
        space = self.search_space
        return list(itertools.product(space.embedding_sizes, space.hidden_sizes)) if self.embeddings else []

    @property
    def projection_rows(self):
        """How many principal directions `fit_projections` needs per boundary."""
        return max(self.search_space.max_hidden_size, self.search_space.max_embedding_size or 0)

    def init_kwargs(self):
        """What `Supernet(search_space, **init_kwargs)` needs to rebuild this supernet (saved in the run config)."""
        return {
            "teacher_hidden_size": self.teacher_hidden_size,
            "hidden_act": self.hidden_act,
            "layer_norm_eps": self.layer_norm_eps,
            "dropout": self.dropout,
            "initializer_range": self.initializer_range,
            "block_projection": self.block_projection,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
        }

    @torch.no_grad()
    def fit_projections(self, bases):
        """Set the block projections from the teacher's principal bases at the `B + 1` block
        boundaries (`projections.fit_boundary_bases`: components P, scales S, mean mu): block b
        reads `S_b^-1 P_b (h - mu_b)` and its output y is mapped back by `P_{b+1}^T S_{b+1} y + mu_{b+1}`,
        so its output space is block b+1's input space."""
        if len(bases) != len(self.blocks) + 1:
            raise ValueError(
                f"Got {len(bases)} boundary bases for {len(self.blocks)} blocks; expected {len(self.blocks) + 1}."
            )
        rows = self.search_space.max_hidden_size
        bases = [(components[:rows], scales[:rows], mean) for components, scales, mean in bases]
        for block, (components, scales, mean), (next_components, next_scales, next_mean) in zip(
            self.blocks, bases[:-1], bases[1:]
        ):
            whiten = components / scales[:, None]
            block.input_projection.weight.copy_(whiten)
            block.input_projection.bias.copy_(-(whiten @ mean))
            block.output_projection.weight.copy_(next_components.T * next_scales)
            block.output_projection.bias.copy_(next_mean)
        if self.embeddings is not None:
            components, scales, mean = bases[0]
            self.embeddings.output_projection.weight.copy_(components.T * scales)
            self.embeddings.output_projection.bias.copy_(mean)

    @torch.no_grad()
    def init_embeddings(self, teacher, bases):
        """Start the searched embedding from the teacher's: its tables rotated onto the leading
        principal directions R of the teacher's embedding output (so every leading slice keeps
        the directions that carry the most variance), a plain LayerNorm, and a projection that
        maps the result to block 0's whitened coordinates as the teacher's own LayerNorm would
        (x = S^-1 P (gamma * R^T e + beta - mu), taking the rotated, normalised sum e for R of the
        normalised teacher sum). Training then fits what the rotation leaves out."""
        if self.embeddings is None:
            return
        source = teacher.embeddings()
        components, scales, mean = bases[0]
        rotation = components[: self.search_space.max_embedding_size].to(self.device)
        target = self.embeddings
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            table = getattr(source, name).weight.to(rotation)
            getattr(target, name).weight.copy_(table[: getattr(target, name).weight.shape[0]] @ rotation.T)
        target.rotation.copy_(rotation)
        target.LayerNorm.reset_parameters()
        rows = self.search_space.max_hidden_size
        whiten = components[:rows].to(rotation) / scales[:rows, None].to(rotation)
        gamma, beta = source.LayerNorm.weight.to(rotation), source.LayerNorm.bias.to(rotation)
        target.projection.weight.copy_(whiten @ (gamma[:, None] * rotation.T))
        target.projection.bias.copy_(whiten @ (beta - mean.to(rotation)))

    def op_config(self, hidden_size, layers=("id",), **kwargs):
        """The `NasBertConfig` the op modules are built with (same activation, norm and dropout)."""
        return NasBertConfig(hidden_size=hidden_size, layers=list(layers), **{**self._standalone_kwargs(), **kwargs})

    def _init_weights(self, module):
        # BERT's initialisation, as `NasBertPreTrainedModel` gives a standalone model.
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(module.weight, std=self.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):  # replaced by the teacher's in training (`init_embeddings`)
            nn.init.normal_(module.weight, std=self.initializer_range)

    # -- block-wise training -------------------------------------------------------------------

    def forward(self, hidden_states, attention_mask, block_archs, input_ids=None, embedding=None):
        """The `(B,)` block losses; with `input_ids` and an `embedding` choice `(E, H)`, a `(B + 1,)`
        tensor whose last entry is the embedding's loss against the teacher's embedding output."""
        if len(block_archs) != len(self.blocks):
            raise ValueError(f"Got {len(block_archs)} block architectures for {len(self.blocks)} blocks.")
        for block, arch in enumerate(block_archs):
            self.search_space.validate(arch, block=block)
        blocks = [
            (lambda x, mask, block=block, arch=arch: block(x, mask, arch))
            for block, arch in zip(self.blocks, block_archs)
        ]
        losses = blockwise_losses(blocks, hidden_states, attention_mask)
        if embedding is None or self.embeddings is None:
            return losses
        prediction = self.embeddings.predict(input_ids, *embedding)
        return torch.cat([losses, masked_mse(prediction, hidden_states[0], attention_mask)[None]])

    def distillation_units(self):
        """The parts trained independently (each clipped on its own): the blocks, then the embedding."""
        return [*self.blocks, *([self.embeddings] if self.embeddings is not None else [])]

    def embedding_sse(self, embedding, input_ids, teacher_output, attention_mask):
        """`(sum of squared errors, count)` of one embedding choice `(E, H)` on one batch."""
        return masked_sse(self.embeddings.predict(input_ids, *embedding), teacher_output, attention_mask)

    def block_sse(self, block, arch, teacher_input, teacher_output, attention_mask):
        """`(sum of squared errors, count)` of one block candidate on one batch (for validation scoring)."""
        prediction = self.blocks[block](teacher_input, key_mask_from(attention_mask), arch)
        return masked_sse(prediction, teacher_output, attention_mask)

    # -- whole architectures -------------------------------------------------------------------

    def encode(self, arch, embedding_output=None, attention_mask=None, input_ids=None):
        """The chained path of a whole architecture: its embedding of `input_ids` (an architecture
        with an `embedding_size`), or block 0's input projection of the teacher's `embedding_output`
        (one without); then every block at its own width, the state resized between blocks of
        different widths (leading principal coordinates kept, or zeros appended) as the exported
        model does."""
        blocks = self.search_space.split(arch)  # validates
        key_mask = key_mask_from(attention_mask)
        if arch.embedding_size is not None:
            hidden = self.embeddings(input_ids, arch.embedding_size, arch.input_width)
        else:
            hidden = sliced_linear(embedding_output, self.blocks[0].input_projection, arch.input_width)
        for block, block_arch in zip(self.blocks, blocks):
            hidden = block.encode(resize_hidden(hidden, block_arch.hidden_size), key_mask, block_arch.layers)
        return hidden

    def project(self, hidden):
        """The last block's output projection: student width -> teacher width."""
        return sliced_linear(hidden, self.blocks[-1].output_projection)

    def export_blocks(self, block_archs):
        """A `BlockwiseStudent` of plain modules holding copies of the sliced weights of `block_archs`."""
        for block, arch in enumerate(block_archs):
            self.search_space.validate(arch, block=block)
        student = BlockwiseStudent(block_archs, self.teacher_hidden_size, **self._standalone_kwargs())
        for source, target, arch in zip(self.blocks, student.blocks, block_archs):
            copy_leading_slices(target.input_projection, source.input_projection)
            copy_leading_slices(target.output_projection, source.output_projection)
            for slot, layer, code in zip(source.slots, target.encoder.layers, arch.layers):
                if op_key(code) != "id":
                    copy_leading_slices(layer, slot.ops[op_key(code)])
        return student.to(self.device)

    def _standalone_kwargs(self):
        """Activation, norm, dropout and init settings shared by the op modules and standalone copies."""
        return {
            "hidden_act": self.hidden_act,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_dropout_prob": self.dropout,
            "attention_probs_dropout_prob": self.dropout,
            "initializer_range": self.initializer_range,
        }

    @property
    def device(self):
        return next(self.parameters()).device

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path):
        """Write the weights as safetensors, atomically."""
        with atomic_path(path) as temporary:
            save_model(self, str(temporary))

    @classmethod
    def from_run(cls, run_dir, device=None):
        """`(supernet, search_space, run_config)` of a finished (or checkpointed) run folder."""
        run_dir = Path(run_dir)
        config_path, weights_path = run_dir / RUN_CONFIG_FILE, run_dir / SUPERNET_WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: {run_dir} is not a finished supernet run folder.")
        run_config = read_json(config_path)
        space = SearchSpace.from_dict(run_config["search_space"])
        supernet = cls(space, **run_config["supernet"])
        load_model(supernet, str(weights_path), device=str(device or "cpu"))
        return supernet.eval(), space, run_config


def copy_leading_slices(target, source):
    """Copy into every tensor of `target` the leading slice of the same-named tensor of `source`."""
    source_state = source.state_dict()
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            tensor.copy_(source_state[name][tuple(slice(0, size) for size in tensor.shape)])


@torch.no_grad()
def evaluate_architecture(supernet, teacher, arch, dataloader, max_batches=None):
    """Validation loss of a whole architecture assembled from the supernet (blocks chained, not
    fed teacher states): MSE of the projected final output against the teacher's final hidden
    states, over real tokens, averaged over all tokens of the batches seen."""
    if isinstance(arch, str):
        arch = Architecture.parse(arch)
    supernet.search_space.validate(arch)
    was_training = supernet.training
    supernet.eval()
    device = supernet.device
    total, count = 0.0, 0.0
    try:
        for index, batch in enumerate(dataloader):
            if max_batches is not None and index >= max_batches:
                break
            mask = batch["attention_mask"]
            states = teacher.block_states(batch["input_ids"], mask, supernet.search_space.num_blocks)
            embedding_output, target = states[0].to(device), states[-1].to(device)
            mask = mask.to(device)
            hidden = supernet.encode(arch, embedding_output, mask, input_ids=batch["input_ids"].to(device))
            prediction = supernet.project(hidden)
            sse, elements = masked_sse(prediction, target, mask)
            total, count = total + sse.item(), count + elements.item()
    finally:
        supernet.train(was_training)
    if count == 0:
        raise ValueError("evaluate_architecture got no batches: the dataloader is empty (or max_batches=0).")
    return total / count
