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
`block_projection="pca"` (what supernet training uses by default) they are fixed, frozen maps
from the teacher's principal components, which makes blocks trained apart chain into whole
models (`projections.py` says why); with `"learned"` they are trained with the block.
"""

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from .architecture import Architecture
from .blockwise import BlockwiseStudent, blockwise_losses, masked_sse
from .modeling import NasBertConfig, NasBertForMaskedLM, parse_op
from .modeling.modeling_nasbert import build_op, key_mask_from, sliced_linear
from .search_space import SearchSpace

RUN_CONFIG = "run_config.json"
SUPERNET_WEIGHTS = "supernet.safetensors"
CANDIDATES = "candidates.json"
BLOCK_PROJECTIONS = ("pca", "learned")


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


def op_key(code):
    """Which module of a slot serves an op code: `mha:4 -> "mha"`, `ffn:512 -> "ffn"`, `conv:5 -> "conv5"`."""
    kind, size = parse_op(code)
    return f"conv{size}" if kind == "conv" else kind


class SupernetSlot(nn.Module):
    """One op slot holding every op of the search space at its largest width."""

    def __init__(self, space, config):
        super().__init__()
        self.ops = nn.ModuleDict()
        largest = {"mha": f"mha:{space.max_size('mha')}", "ffn": f"ffn:{space.max_size('ffn')}"}
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
        config = self.op_config(search_space.max_hidden_size)
        self.blocks = nn.ModuleList(
            SupernetBlock(search_space, config, teacher_hidden_size) for _ in range(search_space.num_blocks)
        )
        self.apply(self._init_weights)
        if block_projection == "pca":  # fixed maps, set by `fit_projections` (or loaded with the weights)
            for block in self.blocks:
                block.input_projection.requires_grad_(False)
                block.output_projection.requires_grad_(False)

    def init_kwargs(self):
        """What `Supernet(search_space, **init_kwargs)` needs to rebuild this supernet (saved in the run config)."""
        return {
            "teacher_hidden_size": self.teacher_hidden_size,
            "hidden_act": self.hidden_act,
            "layer_norm_eps": self.layer_norm_eps,
            "dropout": self.dropout,
            "initializer_range": self.initializer_range,
            "block_projection": self.block_projection,
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
        for block, (components, scales, mean), (next_components, next_scales, next_mean) in zip(
            self.blocks, bases[:-1], bases[1:]
        ):
            whiten = components / scales[:, None]
            block.input_projection.weight.copy_(whiten)
            block.input_projection.bias.copy_(-(whiten @ mean))
            block.output_projection.weight.copy_(next_components.T * next_scales)
            block.output_projection.bias.copy_(next_mean)

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

    # -- block-wise training -------------------------------------------------------------------

    def forward(self, hidden_states, attention_mask, block_archs):
        if len(block_archs) != len(self.blocks):
            raise ValueError(f"Got {len(block_archs)} block architectures for {len(self.blocks)} blocks.")
        for block, arch in enumerate(block_archs):
            self.search_space.validate(arch, block=block)
        blocks = [
            (lambda x, mask, block=block, arch=arch: block(x, mask, arch))
            for block, arch in zip(self.blocks, block_archs)
        ]
        return blockwise_losses(blocks, hidden_states, attention_mask)

    def block_sse(self, block, arch, teacher_input, teacher_output, attention_mask):
        """`(sum of squared errors, count)` of one block candidate on one batch (for validation scoring)."""
        prediction = self.blocks[block](teacher_input, key_mask_from(attention_mask), arch)
        return masked_sse(prediction, teacher_output, attention_mask)

    # -- whole architectures -------------------------------------------------------------------

    def encode(self, arch, embedding_output, attention_mask=None):
        """The chained path of a whole architecture: block 0's input projection of the teacher's
        embedding output, then every slot of every block, at width `arch.hidden_size`."""
        self.search_space.validate(arch)
        key_mask = key_mask_from(attention_mask)
        hidden = sliced_linear(embedding_output, self.blocks[0].input_projection, arch.hidden_size)
        for block, block_arch in zip(self.blocks, self.search_space.split(arch)):
            hidden = block.encode(hidden, key_mask, block_arch.layers)
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
        return student.to(self._device())

    def export(self, arch, teacher):
        """A `NasBertForMaskedLM` of `arch` initialised from the supernet and the teacher.

        Embeddings are the teacher's (`embedding_size` = teacher width); `embeddings.projection`
        is block 0's input projection (also at the teacher's width), so block 0 sees what it saw
        in training; the op slots carry the sliced supernet weights, chained; the MLM head's dense layer is the last
        block's output projection (composed with the teacher's MLM transform when the teacher
        has an MLM head, whose LayerNorm and bias it also takes); the decoder is tied to the
        word embeddings.
        """
        self.search_space.validate(arch)
        embeddings = _bert_embeddings(teacher)
        model = NasBertForMaskedLM(self._export_config(arch, teacher)).to(self._device())
        with torch.no_grad():
            target = model.nasbert.embeddings
            for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
                copy_leading_slices(getattr(target, name), getattr(embeddings, name))
            copy_leading_slices(target.projection, self.blocks[0].input_projection)
            layers = iter(model.nasbert.encoder.layers)
            for block, block_arch in zip(self.blocks, self.search_space.split(arch)):
                for slot, code in zip(block.slots, block_arch.layers):
                    layer = next(layers)
                    if op_key(code) != "id":
                        copy_leading_slices(layer, slot.ops[op_key(code)])
            self._export_head(model.cls, teacher)
        return model

    def _export_head(self, head, teacher):
        projection = self.blocks[-1].output_projection
        width = head.dense.in_features
        weight, bias = projection.weight[:, :width], projection.bias
        parts = _mlm_head_parts(teacher)
        if parts is None:
            head.dense.weight.copy_(weight)
            head.dense.bias.copy_(bias)
            head.LayerNorm.reset_parameters()
            head.bias.zero_()
            return
        dense, norm, decoder_bias = parts
        # Two linear maps in a row are one: teacher_dense(projection(h)).
        dense_weight, dense_bias = dense.weight.to(weight), dense.bias.to(weight)
        head.dense.weight.copy_(dense_weight @ weight)
        head.dense.bias.copy_(dense_weight @ bias + dense_bias)
        head.LayerNorm.load_state_dict(norm.state_dict())
        head.bias.copy_(decoder_bias)

    def _export_config(self, arch, teacher):
        teacher_config = teacher.model.config
        return self.op_config(
            arch.hidden_size,
            arch.layers,
            vocab_size=teacher.vocab_size,
            embedding_size=teacher.hidden_size,
            embedding_projection=True,  # block 0 reads its input projection of the embeddings, at any width
            max_position_embeddings=teacher_config.max_position_embeddings,
            type_vocab_size=getattr(teacher_config, "type_vocab_size", 2),
            pad_token_id=getattr(teacher_config, "pad_token_id", None) or 0,
            # The exported model is trained further and fine-tuned: BERT's dropout, not the supernet's.
            hidden_dropout_prob=getattr(teacher_config, "hidden_dropout_prob", 0.1),
            attention_probs_dropout_prob=getattr(teacher_config, "attention_probs_dropout_prob", 0.1),
        )

    def _standalone_kwargs(self):
        """Activation, norm, dropout and init settings shared by the op modules and standalone copies."""
        return {
            "hidden_act": self.hidden_act,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_dropout_prob": self.dropout,
            "attention_probs_dropout_prob": self.dropout,
            "initializer_range": self.initializer_range,
        }

    def _device(self):
        return next(self.parameters()).device

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path):
        """Write the weights as safetensors, atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.tmp")
        save_model(self, str(temporary))
        temporary.replace(path)

    @classmethod
    def from_run(cls, run_dir, device=None):
        """`(supernet, search_space, run_config)` of a finished (or checkpointed) run folder."""
        run_dir = Path(run_dir)
        config_path, weights_path = run_dir / RUN_CONFIG, run_dir / SUPERNET_WEIGHTS
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: {run_dir} is not a finished supernet run folder.")
        run_config = json.loads(config_path.read_text(encoding="utf-8"))
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


def _bert_embeddings(teacher):
    embeddings = getattr(teacher.model, "embeddings", None)
    needed = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")
    if embeddings is None or not all(hasattr(embeddings, name) for name in needed):
        raise ValueError(
            f"Teacher {teacher.name!r} ({type(teacher.model).__name__}) has no BERT-style embeddings "
            f"(`embeddings.{{{', '.join(needed)}}}`); export supports BERT-family teachers."
        )
    return embeddings


def _mlm_head_parts(teacher):
    """`(dense, LayerNorm, decoder bias)` of the teacher's MLM head, or None when it has none.

    Read by structure, so BERT's `cls.predictions` and RoBERTa's `lm_head` both work: the first
    hidden->hidden linear, the first LayerNorm, and the bias of the linear that outputs the vocabulary.
    """
    if teacher.mlm_head is None:
        return None
    hidden, vocab = teacher.hidden_size, teacher.vocab_size
    modules = list(teacher.mlm_head.modules())
    dense = next((m for m in modules if isinstance(m, nn.Linear) and m.weight.shape == (hidden, hidden)), None)
    norm = next((m for m in modules if isinstance(m, nn.LayerNorm)), None)
    decoder = next((m for m in modules if isinstance(m, nn.Linear) and m.out_features == vocab), None)
    if dense is None or norm is None or decoder is None or decoder.bias is None:
        raise ValueError(
            f"Cannot read the MLM head of teacher {teacher.name!r} ({type(teacher.mlm_head).__name__}): expected a "
            f"dense {hidden}->{hidden} layer, a LayerNorm and a decoder to {vocab} tokens with a bias, as in BERT."
        )
    return dense, norm, decoder.bias


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
    device = supernet._device()
    total, count = 0.0, 0.0
    try:
        for index, batch in enumerate(dataloader):
            if max_batches is not None and index >= max_batches:
                break
            mask = batch["attention_mask"]
            states = teacher.block_states(batch["input_ids"], mask, supernet.search_space.num_blocks)
            embedding_output, target = states[0].to(device), states[-1].to(device)
            mask = mask.to(device)
            prediction = supernet.project(supernet.encode(arch, embedding_output, mask))
            sse, elements = masked_sse(prediction, target, mask)
            total, count = total + sse.item(), count + elements.item()
    finally:
        supernet.train(was_training)
    if count == 0:
        raise ValueError("evaluate_architecture got no batches: the dataloader is empty (or max_batches=0).")
    return total / count
