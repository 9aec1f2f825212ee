"""Export searched architectures as named, loadable models.

Each model folder holds what `save_pretrained` writes (safetensors, config with `auto_map`, the
modeling code for `trust_remote_code`), the teacher's tokenizer, a model card (`README.md`) and
`nasbert.json`: the machine-readable metadata (architecture, costs, losses, provenance) that
`nasbert list`, `nasbert report` and the Hub push read. Folders are written atomically: a crash
leaves either the previous folder or the new one, never half of one.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

from .cost import count_flops, count_params
from .zoo import METADATA_FILE


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


def write_json(path, data):
    """Write JSON atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(handle.name, path)


def replace_folder(staging, target):
    """Move a finished `staging` folder to `target`, replacing any previous one."""
    target = Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def save_model_folder(model, tokenizer, metadata, out_dir):
    """Save `model` + tokenizer + `nasbert.json` + model card into `out_dir`, atomically."""
    from .model_card import build_model_card
    from .zoo import share_permissions

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        write_json(staging / METADATA_FILE, metadata)
        (staging / "README.md").write_text(build_model_card(staging), encoding="utf-8")
        share_permissions(staging)  # mkdtemp made it 0700: readable by all, as a plain folder would be
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
