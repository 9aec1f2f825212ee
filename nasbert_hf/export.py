"""Export searched architectures as named, loadable models.

`from_supernet(supernet, arch, teacher)` builds the standalone `NasBertForMaskedLM` of an
architecture from the supernet's sliced weights and the teacher's embeddings and MLM head;
`save_model_folder` writes it. Each model folder holds what `save_pretrained` writes
(safetensors, config with `auto_map`, the modeling code for `trust_remote_code`), the teacher's
tokenizer, a model card (`README.md`) and `nasbert.json`: the machine-readable metadata
(architecture, costs, losses, provenance) that `nasbert list`, `nasbert report` and the Hub push
read. Folders are written atomically: a crash leaves either the previous folder or the new one,
never half of one.
"""

from pathlib import Path

import torch

from .cost import count_flops, count_params
from .folders import MODEL_CARD_FILE, atomic_folder, write_metadata
from .modeling import NasBertForMaskedLM
from .supernet import copy_leading_slices, op_key


def from_supernet(supernet, arch, teacher):
    """A `NasBertForMaskedLM` of `arch` initialised from the supernet and the teacher.

    Embeddings: with a searched `embedding_size`, the leading slices of the supernet's
    embedding (tables, LayerNorm, projection to block 0's width); without one, the teacher's
    tables with block 0's input projection as `embeddings.projection`, so block 0 sees what it
    saw in training. The op slots carry the sliced supernet weights at each block's width,
    chained (the exported encoder resizes between widths exactly as `Supernet.encode` does). The
    MLM head's dense layer is the last block's output projection (composed with the teacher's MLM
    transform when the teacher has an MLM head at the embedding's width; rotated into the
    student's embedding coordinates otherwise); the decoder is tied to the word embeddings.
    """
    supernet.search_space.validate(arch)
    model = NasBertForMaskedLM(export_config(supernet, arch, teacher)).to(supernet.device)
    with torch.no_grad():
        _export_embeddings(model.nasbert.embeddings, supernet, arch, teacher)
        layers = iter(model.nasbert.encoder.layers)
        for block, block_arch in zip(supernet.blocks, supernet.search_space.split(arch)):
            for slot, code in zip(block.slots, block_arch.layers):
                layer = next(layers)
                if op_key(code) != "id":
                    copy_leading_slices(layer, slot.ops[op_key(code)])
        _export_head(model.cls, supernet, arch, teacher)
    return model


def export_config(supernet, arch, teacher):
    """The `NasBertConfig` of `arch` exported from `supernet`: its ops' settings, the teacher's tables."""
    return supernet.op_config(
        arch.hidden_size,
        arch.layers,
        layer_hidden_sizes=None if arch.is_uniform else list(arch.widths),
        **teacher.embedding_dimensions(),
        embedding_size=arch.embedding_size or teacher.hidden_size,
        embedding_factorization=supernet.embedding_factorization,
        # In principal coordinates block 0 reads a projection of the embeddings at any width; in
        # the teacher's, only a narrower word table needs one.
        embedding_projection=None if supernet.in_teacher_coordinates else True,
        **teacher.model_settings(),  # BERT's dropout, not the supernet's: the model is trained further
    )


def _export_embeddings(target, supernet, arch, teacher):
    if supernet.in_teacher_coordinates and target.projection is None:  # the teacher's width: its table whole
        target.load_state_dict(teacher.embeddings().state_dict(), strict=False)
        return
    if arch.embedding_size is not None:
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm", "projection"):
            copy_leading_slices(getattr(target, name), getattr(supernet.embeddings, name))
        return
    embeddings = teacher.embeddings()
    for name in teacher.BERT_EMBEDDINGS:
        copy_leading_slices(getattr(target, name), getattr(embeddings, name))
    copy_leading_slices(target.projection, supernet.blocks[0].input_projection)


def _export_head(head, supernet, arch, teacher):
    projection = supernet.blocks[-1].output_projection
    width = head.dense.in_features
    weight, bias = projection.weight[:, :width], projection.bias
    parts = teacher.mlm_head_parts()
    if arch.embedding_size is not None and arch.embedding_size != supernet.teacher_hidden_size:
        # Teacher space -> the student's embedding coordinates (the rotation its tables start from).
        rotation = supernet.embeddings.rotation[: arch.embedding_size]
        head.dense.weight.copy_(rotation @ weight)
        head.dense.bias.copy_(rotation @ bias)
        head.LayerNorm.reset_parameters()
        head.bias.copy_(parts[2] if parts is not None else torch.zeros_like(head.bias))
        return
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


def model_metadata(name, arch, config, **extra):
    """The `nasbert.json` record of a model: its architecture and exact costs, plus `extra`
    (budget, latency, teacher, corpus, losses, scores...).

    `params` counts every parameter of the model `AutoModel` loads (embeddings and pooler
    included), as `params=` budgets and the paper do; `body_params` only the op slots
    (`params_no_embeddings` is its older name, kept for readers of earlier folders)."""
    body = count_params(config, embeddings=False, pooler=False)
    return {
        "name": name,
        "architecture": str(arch),
        "hidden_size": arch.hidden_size,
        "layers": list(arch.layers),
        "embedding_size": config.embedding_size,
        "layer_hidden_sizes": list(config.slot_hidden_sizes),
        "params": count_params(config),
        "body_params": body,
        "params_no_embeddings": body,
        "flops": count_flops(config, seq_len=128, pooler=False),
        "flops_seq_len": 128,
        **extra,
    }


def save_model_folder(model, tokenizer, metadata, out_dir):
    """Save `model` + tokenizer + `nasbert.json` + model card into `out_dir`, atomically."""
    from .model_card import build_model_card

    with atomic_folder(out_dir) as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        write_metadata(staging, metadata)
        (staging / MODEL_CARD_FILE).write_text(build_model_card(staging), encoding="utf-8")
    return Path(out_dir)
