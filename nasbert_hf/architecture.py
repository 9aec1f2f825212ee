"""An architecture as plain data: an embedding width, one op code per slot and the width of every slot.

The same frozen object drives the supernet path, the cost models, the search and the export,
and it serialises into `NasBertConfig` (and from it) without loss. The NAS-BERT paper searches
the hidden size per block and the embedding width per model, so both are part of the data:

- `hidden_size` is the width of the model's output (the last slot's), what every head reads;
- `layer_hidden_sizes` gives one width per slot, `None` when every slot has `hidden_size`
  (stored canonically: a list of equal widths becomes `None`);
- `embedding_size` is the width of the token embeddings, `None` for "the first slot's width".

Its text form lists the slots in runs of equal width: `H256[mha:4,ffn:1024]` for a uniform
model, `E64:H128[conv:3,mha:2]H192[ffn:768]` with a 64-wide embedding and two widths.
"""

import re
from dataclasses import dataclass

from .modeling import NasBertConfig, parse_op, validate_layers

_SEGMENT = re.compile(r"H(\d+)\[([^\]]*)\]")


@dataclass(frozen=True)
class Architecture:
    hidden_size: int
    layers: tuple
    embedding_size: int = None
    layer_hidden_sizes: tuple = None

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        widths = self.layer_hidden_sizes
        if widths is not None:
            widths = tuple(int(width) for width in widths)
            if len(widths) != len(self.layers):
                raise ValueError(
                    f"layer_hidden_sizes has {len(widths)} widths for {len(self.layers)} slots; give one per slot."
                )
            if widths and widths[-1] != self.hidden_size:
                raise ValueError(
                    f"hidden_size={self.hidden_size} must be the last slot's width ({widths[-1]}): it is what the "
                    "heads read."
                )
            object.__setattr__(self, "layer_hidden_sizes", None if len(set(widths)) <= 1 else widths)
        if self.embedding_size is not None and (not isinstance(self.embedding_size, int) or self.embedding_size <= 0):
            raise ValueError(f"embedding_size={self.embedding_size!r} must be a positive integer (or None).")
        validate_layers(self.layers, self.widths)

    # -- widths ---------------------------------------------------------------------------------

    @property
    def widths(self):
        """The width of every slot, as a tuple."""
        return self.layer_hidden_sizes or (self.hidden_size,) * len(self.layers)

    @property
    def input_width(self):
        """The first slot's width: what the embedding projection maps to."""
        return self.widths[0]

    @property
    def is_uniform(self):
        return self.layer_hidden_sizes is None

    @classmethod
    def from_widths(cls, widths, layers, embedding_size=None):
        """The architecture with one width per slot (`widths`), e.g. from per-block hidden sizes."""
        widths = tuple(widths)
        return cls(widths[-1], tuple(layers), embedding_size, widths)

    @classmethod
    def join(cls, parts, embedding_size=None):
        """One architecture made of consecutive parts (e.g. block candidates), each with its own widths."""
        widths = tuple(width for part in parts for width in part.widths)
        layers = tuple(code for part in parts for code in part.layers)
        return cls.from_widths(widths, layers, embedding_size)

    def slice(self, start, stop):
        """Slots `start:stop` as an architecture of their own (no embedding)."""
        return Architecture.from_widths(self.widths[start:stop], self.layers[start:stop])

    # -- configs ----------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config):
        widths = getattr(config, "layer_hidden_sizes", None)
        first = widths[0] if widths else config.hidden_size
        # An embedding as wide as the first slot is the default: keep the text form short.
        embedding_size = None if config.embedding_size == first else config.embedding_size
        return cls(config.hidden_size, tuple(config.layers), embedding_size, tuple(widths) if widths else None)

    def to_config(self, **kwargs):
        """A `NasBertConfig` for this architecture; `kwargs` set the rest (vocab size, heads...)."""
        fields = {"hidden_size": self.hidden_size, "layers": list(self.layers)}
        if self.layer_hidden_sizes is not None:
            fields["layer_hidden_sizes"] = list(self.layer_hidden_sizes)
        if self.embedding_size is not None:
            fields["embedding_size"] = self.embedding_size
        return NasBertConfig(**{**fields, **kwargs})

    def ops(self):
        """`[(op_type, size), ...]` for every slot."""
        return [parse_op(code) for code in self.layers]

    # -- serialisation ---------------------------------------------------------------------------

    def to_dict(self):
        data = {"hidden_size": self.hidden_size, "layers": list(self.layers)}
        if self.embedding_size is not None:
            data["embedding_size"] = self.embedding_size
        if self.layer_hidden_sizes is not None:
            data["layer_hidden_sizes"] = list(self.layer_hidden_sizes)
        return data

    @classmethod
    def from_dict(cls, data):
        widths = data.get("layer_hidden_sizes")
        return cls(data["hidden_size"], tuple(data["layers"]), data.get("embedding_size"),
                   tuple(widths) if widths else None)

    def segments(self):
        """`[(width, [codes...]), ...]`: runs of consecutive slots of equal width."""
        runs = []
        for width, code in zip(self.widths, self.layers):
            if runs and runs[-1][0] == width:
                runs[-1][1].append(code)
            else:
                runs.append((width, [code]))
        return runs

    def __str__(self):
        prefix = "" if self.embedding_size is None else f"E{self.embedding_size}:"
        return prefix + "".join(f"H{width}[{','.join(codes)}]" for width, codes in self.segments())

    @classmethod
    def parse(cls, text):
        """Inverse of `str()`: `Architecture.parse("E64:H128[conv:3,mha:2]H192[ffn:768]")`."""
        original, text = text, text.strip()
        embedding_size = None
        match = re.match(r"E(\d+):", text)
        if match:
            embedding_size, text = int(match.group(1)), text[match.end():]
        segments = list(_SEGMENT.finditer(text))
        if not segments or "".join(m.group(0) for m in segments) != text:
            raise ValueError(
                f"Cannot parse architecture {original!r}: expected e.g. 'H256[mha:4,ffn:1024,id]' or "
                "'E64:H128[conv:3,mha:2]H192[ffn:768]'."
            )
        widths, layers = [], []
        for match in segments:
            codes = [code.strip() for code in match.group(2).split(",") if code.strip()]
            widths += [int(match.group(1))] * len(codes)
            layers += codes
        if not layers:
            raise ValueError(f"Cannot parse architecture {original!r}: it has no op slots.")
        return cls.from_widths(widths, layers, embedding_size)
