"""An architecture as plain data: a hidden size plus one op code per slot.

The same frozen object drives the supernet path, the cost models, the search and the export,
and it serialises into `NasBertConfig` (and from it) without loss.
"""

from dataclasses import dataclass

from .modeling import NasBertConfig, parse_op, validate_layers


@dataclass(frozen=True)
class Architecture:
    hidden_size: int
    layers: tuple

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        validate_layers(self.layers, self.hidden_size)

    @classmethod
    def from_config(cls, config):
        return cls(config.hidden_size, tuple(config.layers))

    def to_config(self, **kwargs):
        """A `NasBertConfig` for this architecture; `kwargs` set the rest (vocab size, embedding size...)."""
        return NasBertConfig(hidden_size=self.hidden_size, layers=list(self.layers), **kwargs)

    def ops(self):
        """`[(op_type, size), ...]` for every slot."""
        return [parse_op(code) for code in self.layers]

    def to_dict(self):
        return {"hidden_size": self.hidden_size, "layers": list(self.layers)}

    @classmethod
    def from_dict(cls, data):
        return cls(data["hidden_size"], tuple(data["layers"]))

    def __str__(self):
        return f"H{self.hidden_size}[{','.join(self.layers)}]"

    @classmethod
    def parse(cls, text):
        """Inverse of `str()`: `Architecture.parse("H256[mha:4,ffn:1024]")`."""
        text = text.strip()
        if not (text.startswith("H") and text.endswith("]") and "[" in text):
            raise ValueError(f"Cannot parse architecture {text!r}: expected e.g. 'H256[mha:4,ffn:1024,id]'.")
        hidden, _, body = text[1:-1].partition("[")
        return cls(int(hidden), tuple(code.strip() for code in body.split(",") if code.strip()))
