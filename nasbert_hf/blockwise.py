"""Block-wise distillation (NAS-BERT, section 3.2).

The teacher's layers and the student's op slots are cut into the same B blocks. ONE teacher
forward pass per batch gives every block its input (the teacher's hidden states at the start
of the block) and its target (the teacher's hidden states at its end). Student block b maps
the input, through an input projection (teacher width -> student width), its op slots and an
output projection (student width -> teacher width), onto the target; the loss is the MSE over
real tokens. (The supernet's projections are fixed principal-component maps by default, see
`projections.py`; here they are whatever the caller loads.) Blocks share no parameters and no
activations, so all B train in the same step and independently of each other: the loss of
one never reaches another.

`BlockwiseStudent` is a fixed architecture built from plain `NasBertEncoder` modules; the
supernet's sampled path computes exactly what it computes (tests), and the benchmark uses it
as the "plain standalone model" the supernet step is compared to.
"""

import torch
from torch import nn

from .modeling.modeling_nasbert import NasBertEncoder, key_mask_from


def masked_sse(prediction, target, attention_mask=None):
    """`(sum of squared errors, number of summed elements)` over real tokens, in float32.

    Sums (not means) so that losses of several batches or processes combine exactly.
    """
    error = (prediction.float() - target.float()).pow(2)
    if attention_mask is None:
        return error.sum(), torch.tensor(float(error.numel()), device=error.device)
    weights = attention_mask.to(error.dtype)[..., None]
    return (error * weights).sum(), weights.sum() * error.shape[-1]


def masked_mse(prediction, target, attention_mask=None):
    """Mean squared error over real tokens and features (float32)."""
    sse, count = masked_sse(prediction, target, attention_mask)
    return sse / count.clamp(min=1)


def blockwise_losses(blocks, hidden_states, attention_mask):
    """`(B,)` losses: `blocks[b](hidden_states[b], key_mask)` against `hidden_states[b + 1]`.

    `blocks` are callables `(teacher_input, key_mask) -> prediction at teacher width`.
    """
    if len(hidden_states) != len(blocks) + 1:
        raise ValueError(
            f"Got {len(hidden_states)} teacher hidden states for {len(blocks)} blocks; expected {len(blocks) + 1} "
            "(the embedding output, then the output of every block)."
        )
    key_mask = key_mask_from(attention_mask)
    return torch.stack(
        [
            masked_mse(block(hidden_states[b], key_mask), hidden_states[b + 1], attention_mask)
            for b, block in enumerate(blocks)
        ]
    )


class BlockStudent(nn.Module):
    """One block of a fixed architecture: input projection, op slots (`NasBertEncoder`), output projection."""

    def __init__(self, arch, teacher_hidden_size, **config_kwargs):
        super().__init__()
        config = arch.to_config(**config_kwargs)
        self.arch = arch
        self.input_projection = nn.Linear(teacher_hidden_size, arch.hidden_size)
        self.encoder = NasBertEncoder(config)
        self.output_projection = nn.Linear(arch.hidden_size, teacher_hidden_size)

    def forward(self, teacher_input, key_mask=None):
        hidden, _, _ = self.encoder(self.input_projection(teacher_input), key_mask)
        return self.output_projection(hidden)


class BlockwiseStudent(nn.Module):
    """A fixed architecture trained block-wise: one `BlockStudent` per block.

    `forward(hidden_states, attention_mask)` takes the teacher's `B + 1` block-boundary states
    and returns the `(B,)` block losses, the same interface as `Supernet.forward` (which also
    takes the sampled block architectures; here they are fixed and the argument is ignored).
    """

    def __init__(self, block_archs, teacher_hidden_size, **config_kwargs):
        super().__init__()
        self.blocks = nn.ModuleList(BlockStudent(arch, teacher_hidden_size, **config_kwargs) for arch in block_archs)

    @property
    def block_archs(self):
        return [block.arch for block in self.blocks]

    def forward(self, hidden_states, attention_mask=None, block_archs=None):
        return blockwise_losses(list(self.blocks), hidden_states, attention_mask)


def distillation_step(
    accelerator, model, teacher, batch, optimizer, scheduler=None, block_archs=None, max_grad_norm=None,
    embedding=None,
):
    """One block-wise distillation step; returns the detached `(B,)` block losses (`(B + 1,)`,
    the embedding's last, when a supernet also trains an `embedding` choice `(E, H)`).

    One teacher forward pass gives every block its input and target; the B losses are summed
    for one backward pass, which leaves each block with the gradient of its own loss only.
    Gradient clipping is per block, so that one block's large gradient never shrinks another's.
    """
    unwrapped = accelerator.unwrap_model(model)
    num_blocks = len(unwrapped.blocks)
    extra = {} if embedding is None else {"input_ids": batch["input_ids"], "embedding": embedding}
    with accelerator.autocast():
        states = teacher.block_states(batch["input_ids"], batch["attention_mask"], num_blocks)
        losses = model(states, batch["attention_mask"], block_archs, **extra)
    accelerator.backward(losses.sum())
    if max_grad_norm:
        accelerator.unscale_gradients()  # once for all blocks (fp16 loss scaling), then clip each block
        units = unwrapped.distillation_units() if hasattr(unwrapped, "distillation_units") else unwrapped.blocks
        for block in units:
            torch.nn.utils.clip_grad_norm_(block.parameters(), max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return losses.detach()
