"""The NAS-BERT search space as data: hidden sizes, embedding sizes, op choices, op slots and blocks.

An architecture of the space has one hidden size per block (blocks may differ, as in the
paper), one op code per slot and, when the space lists `embedding_sizes`, one embedding width;
the slots are cut into `num_blocks` equal blocks, the unit of block-wise distillation. Every
slot offers the same op choices, except that `mha:H` is only offered at hidden sizes that H
divides (the paper pairs head counts 2/3/4/6/8 with hidden sizes 128...512, so not every count
fits every width). A block candidate (one hidden size plus the ops of one block's slots) is an
`Architecture` too, so the same object drives the supernet, the costs and export.

Without `embedding_sizes` a model keeps the teacher's embedding width (the first design).

`slot_kinds` types the slots: with `[mha, ffn]` slot i offers only ops of kind
`slot_kinds[i % 2]` (plus `id`, and kinds the list does not name, such as `conv`), so that a
slot holding a teacher's attention sub-layer offers that attention and its slices, and the next
one the teacher's feed-forward and its slices.

Spaces derived from the teacher. A preset may give sizes relative to the teacher it is trained
from: `teacher` in `hidden_sizes` or `embedding_sizes` is the teacher's width, `mha:teacher/k`
is `mha:HxD` with 1/k of the teacher's H heads of its own size D, and `ffn:teacher/k` is 1/k of
its feed-forward neurons (`/1` may be left out). `load_search_space(name, teacher_config)`
resolves them, so one preset serves every teacher; the run records the resolved space.

Presets live in `nasbert_hf/presets/<name>.yaml` (package data): a `search_space` section and
optional `training` and `distill` sections with the defaults that fit the space; every config
file is read by `nasbert_hf.arguments.read_config`.
"""

import itertools
import math
from dataclasses import asdict, dataclass

from .architecture import Architecture
from .arguments import read_config
from .modeling import parse_attention, parse_op

TEACHER = "teacher"  # a size relative to the teacher, in presets (see the module doc)


@dataclass(frozen=True)
class SearchSpace:
    """`hidden_sizes` (ascending), `ops` (op codes offered in every slot), `num_slots` op slots
    cut into `num_blocks` blocks of equal length, and the searched `embedding_sizes` (ascending;
    empty: the embedding keeps the teacher's width)."""

    hidden_sizes: tuple
    ops: tuple
    num_slots: int
    num_blocks: int
    embedding_sizes: tuple = ()
    slot_kinds: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "embedding_sizes", tuple(self.embedding_sizes or ()))
        object.__setattr__(self, "slot_kinds", tuple(self.slot_kinds or ()))
        self._validate()

    def _validate(self):
        if not self.hidden_sizes or any(not isinstance(h, int) or h <= 0 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes={list(self.hidden_sizes)} must be a non-empty list of positive integers.")
        if list(self.hidden_sizes) != sorted(set(self.hidden_sizes)):
            raise ValueError(f"hidden_sizes={list(self.hidden_sizes)} must be strictly ascending, without repeats.")
        sizes = self.embedding_sizes
        if any(not isinstance(e, int) or e <= 0 for e in sizes) or list(sizes) != sorted(set(sizes)):
            raise ValueError(
                f"embedding_sizes={list(sizes)} must be strictly ascending positive integers (or empty)."
            )
        if not self.ops or len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops={list(self.ops)} must be a non-empty list of distinct op codes.")
        for code in self.ops:
            kind, size = parse_op(code)
            if kind == "conv" and size % 2 == 0:
                raise ValueError(f"Op {code!r}: conv kernels must be odd (3, 5, 7) to keep the sequence length.")
            if kind == "mha" and not any(op_fits(code, hidden) for hidden in self.hidden_sizes):
                raise ValueError(
                    f"Op {code!r}: {size} heads divide none of hidden_sizes={list(self.hidden_sizes)}; "
                    "use head counts that divide at least one hidden size."
                )
        kinds = {parse_op(code)[0] for code in self.ops}
        for kind in self.slot_kinds:
            if kind not in kinds - {"id"}:
                raise ValueError(f"slot_kinds={list(self.slot_kinds)}: {kind!r} is not the kind of any op of {list(self.ops)}.")
        if self.slot_kinds and self.slots_per_block % len(self.slot_kinds):
            raise ValueError(f"slot_kinds={list(self.slot_kinds)} must divide the {self.slots_per_block} slots of a block.")
        if not isinstance(self.num_blocks, int) or self.num_blocks < 1:
            raise ValueError(f"num_blocks={self.num_blocks!r} must be a positive integer.")
        if not isinstance(self.num_slots, int) or self.num_slots < 1 or self.num_slots % self.num_blocks:
            raise ValueError(
                f"num_slots={self.num_slots!r} must be a positive multiple of num_blocks={self.num_blocks} "
                "(every block holds the same number of slots)."
            )

    # -- shape of the space -------------------------------------------------------------------

    @property
    def slots_per_block(self):
        return self.num_slots // self.num_blocks

    @property
    def max_hidden_size(self):
        return self.hidden_sizes[-1]

    def max_size(self, kind):
        """Largest size among the ops of one type (`"mha"` heads, `"ffn"` inner size), 0 if absent."""
        return max((size for k, size in map(parse_op, self.ops) if k == kind), default=0)

    def ops_for(self, hidden_size, slot=None):
        """The op codes a slot offers at `hidden_size` (head counts that do not divide it left out);
        with `slot` (its index within a block), only the ops its `slot_kinds` entry allows."""
        allowed = self.ops if slot is None else self._slot_ops(slot)
        return tuple(code for code in allowed if op_fits(code, hidden_size))

    def _slot_ops(self, slot):
        if not self.slot_kinds:
            return self.ops
        own = self.slot_kinds[slot % len(self.slot_kinds)]
        return tuple(code for code in self.ops if parse_op(code)[0] in (own, "id") or
                     parse_op(code)[0] not in self.slot_kinds)

    def slot_choices(self, hidden_size):
        """`[ops of slot 0, ops of slot 1, ...]` of one block at `hidden_size`."""
        return [self.ops_for(hidden_size, slot) for slot in range(self.slots_per_block)]

    @property
    def max_embedding_size(self):
        return self.embedding_sizes[-1] if self.embedding_sizes else None

    def size(self):
        """Exact number of whole architectures in the space (a hidden size per block, an embedding width)."""
        return self.block_size() ** self.num_blocks * max(1, len(self.embedding_sizes))

    def block_size(self, hidden_size=None):
        """Exact number of candidates of one block (hidden size x ops of its slots), or of one hidden size."""
        hiddens = self.hidden_sizes if hidden_size is None else (hidden_size,)
        return sum(math.prod(len(ops) for ops in self.slot_choices(h)) for h in hiddens)

    def block_slots(self, block):
        """The slot indices of `block`, as a `range`."""
        if not 0 <= block < self.num_blocks:
            raise ValueError(f"block={block} is out of range for a space of {self.num_blocks} blocks.")
        return range(block * self.slots_per_block, (block + 1) * self.slots_per_block)

    # -- candidates ----------------------------------------------------------------------------

    def enumerate_block(self, hidden_size=None):
        """Every block candidate (as an `Architecture`), hidden size by hidden size, in a fixed order."""
        hiddens = self.hidden_sizes if hidden_size is None else (hidden_size,)
        for hidden in hiddens:
            for layers in itertools.product(*self.slot_choices(hidden)):
                yield Architecture(hidden, layers)

    def sample_block(self, rng, hidden_size=None):
        """A uniformly random block candidate; `rng` is a `random.Random` (explicit, for reproducibility)."""
        hidden = rng.choice(self.hidden_sizes) if hidden_size is None else hidden_size
        return Architecture(hidden, tuple(rng.choice(ops) for ops in self.slot_choices(hidden)))

    def validate(self, arch, block=None):
        """Raise `ValueError` unless `arch` belongs to the space (or is a candidate of one block)."""
        if block is not None:
            return self._validate_block(arch, block)
        if len(arch.layers) != self.num_slots:
            raise ValueError(f"architecture {arch}: has {len(arch.layers)} slots, the space has {self.num_slots}.")
        for index in range(self.num_blocks):
            self._validate_block(arch.slice(*_bounds(self.block_slots(index))), index, whole=arch)
        if self.embedding_sizes and arch.embedding_size not in self.embedding_sizes:
            raise ValueError(
                f"architecture {arch}: embedding size {arch.embedding_size} is not one of {list(self.embedding_sizes)}."
            )
        if not self.embedding_sizes and arch.embedding_size is not None:
            raise ValueError(
                f"architecture {arch}: this space does not search the embedding width (it keeps the teacher's)."
            )

    def _validate_block(self, arch, block, whole=None):
        what = f"block {block} candidate" if whole is None else f"architecture {whole}, block {block},"
        if not arch.is_uniform:
            raise ValueError(f"{what} {arch}: every slot of a block has the same hidden size.")
        if arch.hidden_size not in self.hidden_sizes:
            raise ValueError(f"{what} {arch}: hidden size {arch.hidden_size} is not one of {list(self.hidden_sizes)}.")
        if len(arch.layers) != self.slots_per_block:
            raise ValueError(f"{what} {arch}: has {len(arch.layers)} slots, the space has {self.slots_per_block}.")
        for index, (code, allowed) in enumerate(zip(arch.layers, self.slot_choices(arch.hidden_size))):
            if code not in allowed:
                raise ValueError(f"{what} {arch}: slot {index} op {code!r} is not one of {list(allowed)}.")

    def split(self, arch):
        """The per-block candidates of a whole architecture."""
        self.validate(arch)
        return [arch.slice(*_bounds(self.block_slots(block))) for block in range(self.num_blocks)]

    def join(self, blocks, embedding_size=None):
        """The whole architecture made of one candidate per block (hidden sizes may differ by block)."""
        if len(blocks) != self.num_blocks:
            raise ValueError(f"Need one candidate per block ({self.num_blocks}); got {len(blocks)}.")
        arch = Architecture.join(blocks, embedding_size)
        self.validate(arch)
        return arch

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self):
        data = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        if not self.embedding_sizes:
            del data["embedding_sizes"]  # spaces of the first design read and write as before
        if not self.slot_kinds:
            del data["slot_kinds"]
        return data

    @classmethod
    def from_dict(cls, data):
        known = {"hidden_sizes", "ops", "num_slots", "num_blocks", "embedding_sizes", "slot_kinds"}
        unknown = set(data) - known
        missing = known - set(data) - {"embedding_sizes", "slot_kinds"}
        if unknown or missing:
            raise ValueError(
                f"Search space fields: unknown {sorted(unknown)}, missing {sorted(missing)}; expected {sorted(known)}."
            )
        return cls(**data)

    def describe(self):
        embeddings = (f"embedding sizes {list(self.embedding_sizes)}, " if self.embedding_sizes
                      else "the teacher's embedding width, ")
        kinds = f"slot kinds {list(self.slot_kinds)}, " if self.slot_kinds else ""
        return (
            f"{kinds}{len(self.hidden_sizes)} hidden sizes {list(self.hidden_sizes)} (one per block), {embeddings}"
            f"{len(self.ops)} ops {list(self.ops)}, "
            f"{self.num_slots} slots in {self.num_blocks} blocks: {self.size():.3e} architectures "
            f"({self.block_size()} candidates per block)"
        )


def _bounds(slots):
    return slots.start, slots.stop


def op_fits(code, hidden_size):
    """Whether a slot of width `hidden_size` can hold `code` (`mha:H` needs H to divide it)."""
    kind, size = parse_op(code)
    return kind != "mha" or parse_attention(code)[1] is not None or hidden_size % size == 0


def load_search_space(name_or_path, teacher_config=None):
    """The `SearchSpace` of a preset name (`tiny`, `base`) or of a YAML/JSON file: its `search_space`
    section, or the whole file when it holds only the search-space fields. Sizes relative to the
    teacher (`teacher`, `mha:teacher/2`...) are resolved with `teacher_config` (the teacher's
    transformers config); by default with the config of the teacher the file's `training` section
    names, else of the embedded default teacher."""
    config = read_config(name_or_path)
    section = config.section("search_space", whole_if_absent=True)
    if _mentions_teacher(section):
        teacher = config.section("training").get("teacher")
        section = resolve_teacher_sizes(section, teacher_config or teacher_config_of(teacher))
    return SearchSpace.from_dict(section)


def _mentions_teacher(section):
    values = [*section.get("hidden_sizes", ()), *(section.get("embedding_sizes") or ()), *section.get("ops", ())]
    return any(TEACHER in str(value) for value in values)


def resolve_teacher_sizes(section, teacher_config):
    """`section` (a search-space dict) with its teacher-relative sizes replaced by `teacher_config`'s."""
    width, heads = teacher_config.hidden_size, teacher_config.num_attention_heads
    head_size = getattr(teacher_config, "head_dim", None) or width // heads
    inner = teacher_config.intermediate_size

    def size(value):
        return width if value == TEACHER else value

    def op(code):
        kind, _, arg = str(code).partition(":")
        name, _, divisor = arg.partition("/")
        if name != TEACHER:
            return code
        if not (divisor or "1").isdigit() or int(divisor or 1) < 1 or kind not in ("mha", "ffn"):
            raise ValueError(f"Op {code!r}: expected 'mha:teacher/k' or 'ffn:teacher/k' with k a positive integer.")
        part = int(divisor or 1)
        if kind == "mha":
            if heads % part:
                raise ValueError(f"Op {code!r}: the teacher's {heads} heads do not split in {part}.")
            return f"mha:{heads // part}x{head_size}"
        return f"ffn:{inner // part}"

    resolved = dict(section)
    resolved["hidden_sizes"] = [size(value) for value in section["hidden_sizes"]]
    if section.get("embedding_sizes"):
        resolved["embedding_sizes"] = sorted({size(value) for value in section["embedding_sizes"]})
    resolved["ops"] = [op(code) for code in section["ops"]]
    return resolved


def teacher_config_of(teacher=None):
    """The transformers config of a teacher folder or Hub name (default: the embedded teacher)."""
    from transformers import AutoConfig

    from .teacher import DEFAULT_TEACHER, DEFAULT_TEACHER_NAME, teacher_name

    name = teacher_name(teacher)
    try:
        return AutoConfig.from_pretrained(DEFAULT_TEACHER if name == DEFAULT_TEACHER_NAME else name)
    except OSError as error:
        raise ValueError(f"The search space is derived from teacher {name!r}, whose config cannot be read: {error}") from None


def check_against_teacher(space, teacher):
    """Raise `ValueError` when the teacher cannot supply one target per block."""
    if space.num_blocks > teacher.num_layers:
        raise ValueError(
            f"The search space has num_blocks={space.num_blocks} blocks but teacher {teacher.name!r} has only "
            f"{teacher.num_layers} layers: every block needs at least one teacher layer; use at most "
            f"{teacher.num_layers} blocks."
        )
