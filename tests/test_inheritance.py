import pytest
import torch
from conftest import random_inputs
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

from nasbert_hf.architecture import Architecture
from nasbert_hf.inheritance import (
    TeacherImportance,
    fit_layer_bases,
    inherit_from_teacher,
    slot_layers,
    teacher_importance,
)
from nasbert_hf.modeling.modeling_nasbert import key_mask_from
from nasbert_hf.projections import fit_boundary_bases
from nasbert_hf.search_space import SearchSpace
from nasbert_hf.supernet import Supernet, sampled
from nasbert_hf.teacher import Teacher

HIDDEN, HEADS, INNER, LAYERS, VOCAB = 32, 4, 64, 2, 100


def random_teacher(layers=LAYERS, hidden=HIDDEN, seed=0):
    """A tiny random BERT with non-trivial biases and LayerNorms (so that every term matters)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=HEADS,
        intermediate_size=2 * hidden, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertModel(config, add_pooling_layer=False)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    return Teacher(model=model.eval().requires_grad_(False), tokenizer=None, mlm_head=None, name="random-bert")


def batches(count=3, seed=0):
    return [dict(zip(("input_ids", "attention_mask"), random_inputs(VOCAB, seed=seed + i))) for i in range(count)]


def identity_bases(count, rows=HIDDEN, width=HIDDEN):
    return [(torch.eye(rows, width), torch.ones(rows), torch.zeros(width)) for _ in range(count)]


def supernet_for(teacher, hidden_sizes=(HIDDEN,), ops=("mha:4", "ffn:64"), slots_per_layer=2):
    space = SearchSpace(list(hidden_sizes), list(ops), slots_per_layer * teacher.num_layers, teacher.num_layers)
    return Supernet(space, teacher.hidden_size, block_projection="pca").eval()


class SubLayerCapture:
    """The teacher's sub-layer inputs and pre-LayerNorm updates of every layer, from hooks."""

    def __init__(self, teacher, batch):
        self.records = {}
        handles = []
        for index in range(teacher.num_layers):
            layer = teacher.layer(index)
            handles.append(layer.attention_output.register_forward_hook(self.save(index, "attention_update")))
            handles.append(layer.attention_norm.register_forward_hook(self.save(index, "attention_out")))
            handles.append(layer.output.register_forward_hook(self.save(index, "ffn_update")))
        try:
            out = teacher.model(**batch, output_hidden_states=True)
        finally:
            for handle in handles:
                handle.remove()
        self.hidden_states = out.hidden_states

    def save(self, index, name):
        def hook(module, inputs, output):
            self.records[index, name] = output

        return hook


def run_op(op, x, key_mask, **attributes):
    with sampled(op, **attributes):
        return op(x, key_mask)[0], op.transform(x, key_mask, False)[0]


# -- (i) exactness ---------------------------------------------------------------------------


def test_identity_basis_with_teacher_norms_reproduces_every_teacher_sub_layer():
    teacher = random_teacher()
    supernet = supernet_for(teacher)
    bases = identity_bases(teacher.num_layers + 1)
    supernet.fit_projections(bases)
    importance = teacher_importance(teacher, batches())
    inherit_from_teacher(supernet, teacher, bases, importance)
    batch = batches(1, seed=7)[0]
    capture = SubLayerCapture(teacher, batch)
    key_mask, mask = key_mask_from(batch["attention_mask"]), batch["attention_mask"].bool()
    for index, block in enumerate(supernet.blocks):  # one teacher layer per block: slots mha, ffn
        layer = teacher.layer(index)
        mha, ffn = block.slots[0].ops["mha"], block.slots[1].ops["ffn"]
        mha.LayerNorm.load_state_dict(layer.attention_norm.state_dict())
        ffn.LayerNorm.load_state_dict(layer.output_norm.state_dict())
        attention_out, _ = run_op(mha, capture.hidden_states[index], key_mask, num_heads=HEADS)
        torch.testing.assert_close(attention_out[mask], capture.records[index, "attention_out"][mask], atol=1e-5, rtol=0)
        ffn_out, _ = run_op(ffn, capture.records[index, "attention_out"], None, inner_size=INNER)
        torch.testing.assert_close(ffn_out[mask], capture.hidden_states[index + 1][mask], atol=1e-5, rtol=0)
        # The whole block (identity projections) is the teacher's layer.
        arch = Architecture(HIDDEN, ("mha:4", "ffn:64"))
        output = block(capture.hidden_states[index], key_mask, arch)
        torch.testing.assert_close(output[mask], capture.hidden_states[index + 1][mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("per_layer", [False, True])
def test_full_rank_principal_basis_maps_the_teacher_updates_exactly(per_layer):
    """In any full-rank whitened principal basis, the inherited ops' residual updates are the
    teacher's updates in student coordinates: P^T S transform(x) == teacher update, x = S^-1 P (h - mu)."""
    teacher = random_teacher()
    data = batches(4)
    layer_bases = fit_layer_bases(teacher, data, HIDDEN)
    bases = fit_boundary_bases(teacher, data, teacher.num_layers, HIDDEN)
    for (p, s, m), (q, t, n) in zip(bases, [layer_bases[i] for i in teacher.block_boundaries(teacher.num_layers)]):
        torch.testing.assert_close((p, s, m), (q, t, n))  # block-boundary bases are the layer bases there
    supernet = supernet_for(teacher)
    supernet.fit_projections(bases)
    inherit_from_teacher(
        supernet, teacher, bases, teacher_importance(teacher, data), layer_bases=layer_bases if per_layer else None
    )
    batch = batches(1, seed=9)[0]
    capture = SubLayerCapture(teacher, batch)
    key_mask, mask = key_mask_from(batch["attention_mask"]), batch["attention_mask"].bool()
    for index, block in enumerate(supernet.blocks):
        components, scales, mean = layer_bases[index] if per_layer else bases[index]
        to_student = lambda h: ((h - mean) @ components.T) / scales  # noqa: E731
        to_teacher = lambda x: (x * scales) @ components  # noqa: E731 (an update: no mean)
        mha, ffn = block.slots[0].ops["mha"], block.slots[1].ops["ffn"]
        _, update = run_op(mha, to_student(capture.hidden_states[index]), key_mask, num_heads=HEADS)
        expected = capture.records[index, "attention_update"]
        torch.testing.assert_close(to_teacher(update)[mask], expected[mask], atol=2e-4, rtol=1e-4)
        _, update = run_op(ffn, to_student(capture.records[index, "attention_out"]), None, inner_size=INNER)
        expected = capture.records[index, "ffn_update"]
        torch.testing.assert_close(to_teacher(update)[mask], expected[mask], atol=2e-4, rtol=1e-4)


# -- (ii) importance and ordering ------------------------------------------------------------


def test_teacher_importance_skips_padding_and_sees_silenced_heads_and_neurons():
    teacher = random_teacher()
    data = batches(2)
    padded = teacher_importance(teacher, data)
    assert padded.heads.shape == (LAYERS, HEADS) and padded.neurons.shape == (LAYERS, INNER)
    assert padded.tokens == sum(int(b["attention_mask"].sum()) for b in data)
    # Each row alone, without its padding, gives the same scores.
    rows = []
    for batch in data:
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            length = int(mask.sum())
            rows.append({"input_ids": ids[None, :length], "attention_mask": mask[None, :length]})
    unpadded = teacher_importance(teacher, rows)
    torch.testing.assert_close(padded.heads, unpadded.heads, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(padded.neurons, unpadded.neurons, rtol=1e-5, atol=1e-6)
    # A head whose values are zero and a neuron whose output column is zero contribute nothing.
    layer = teacher.layer(1)
    size = layer.head_size
    with torch.no_grad():
        layer.value.weight[2 * size : 3 * size] = 0
        layer.value.bias[2 * size : 3 * size] = 0
        layer.output.weight[:, 5] = 0
    silenced = teacher_importance(teacher, data)
    assert silenced.heads[1, 2] == 0 and silenced.head_order(1)[-1] == 2
    assert silenced.neurons[1, 5] == 0 and silenced.neuron_order(1)[-1] == 5


def test_leading_slices_hold_the_most_important_heads_and_neurons():
    teacher = random_teacher()
    supernet = supernet_for(teacher)
    bases = identity_bases(teacher.num_layers + 1)
    generator = torch.Generator().manual_seed(3)
    importance = TeacherImportance(
        heads=torch.rand(LAYERS, HEADS, generator=generator),
        neurons=torch.rand(LAYERS, INNER, generator=generator),
        tokens=1,
    )
    inherit_from_teacher(supernet, teacher, bases, importance)
    size = HIDDEN // HEADS
    for index, block in enumerate(supernet.blocks):
        layer = teacher.layer(index)
        mha, ffn = block.slots[0].ops["mha"], block.slots[1].ops["ffn"]
        heads = torch.sort(importance.heads[index], descending=True).indices
        for rank, head in enumerate(heads.tolist()):
            student, teacher_rows = slice(rank * size, (rank + 1) * size), slice(head * size, (head + 1) * size)
            for name in ("query", "key", "value"):
                torch.testing.assert_close(getattr(mha, name).weight[student], getattr(layer, name).weight[teacher_rows])
                torch.testing.assert_close(getattr(mha, name).bias[student], getattr(layer, name).bias[teacher_rows])
            torch.testing.assert_close(mha.output.weight[:, student], layer.attention_output.weight[:, teacher_rows])
        neurons = torch.sort(importance.neurons[index], descending=True).indices
        torch.testing.assert_close(ffn.intermediate.weight, layer.intermediate.weight[neurons])
        torch.testing.assert_close(ffn.intermediate.bias, layer.intermediate.bias[neurons])
        torch.testing.assert_close(ffn.output.weight, layer.output.weight[:, neurons])
        for op in (mha, ffn):  # LayerNorms start at unit scale
            assert bool((op.LayerNorm.weight == 1).all()) and bool((op.LayerNorm.bias == 0).all())


def test_slots_map_onto_the_layers_of_their_block():
    teacher = random_teacher(layers=6, hidden=16)
    space = SearchSpace([16], ["mha:2", "ffn:32"], 12, 3)  # the tiny preset's layout: 3 blocks of 4 slots
    assert slot_layers(Supernet(space, 16), teacher) == [[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]]
    space = SearchSpace([16], ["mha:2", "ffn:32"], 6, 3)  # 2 slots per 2 layers: one slot a layer
    assert slot_layers(Supernet(space, 16), teacher) == [[0, 1], [2, 3], [4, 5]]


def test_query_scale_multiplies_the_inherited_queries_only():
    teacher = random_teacher()
    bases = identity_bases(teacher.num_layers + 1)
    importance = teacher_importance(teacher, batches(1))
    plain, scaled = supernet_for(teacher), supernet_for(teacher)
    inherit_from_teacher(plain, teacher, bases, importance)
    inherit_from_teacher(scaled, teacher, bases, importance, query_scale=0.5)
    a, b = plain.blocks[0].slots[0].ops["mha"], scaled.blocks[0].slots[0].ops["mha"]
    torch.testing.assert_close(b.query.weight, 0.5 * a.query.weight)
    torch.testing.assert_close(b.query.bias, 0.5 * a.query.bias)
    torch.testing.assert_close(b.key.weight, a.key.weight)


# -- (iii) what has no counterpart is left alone ----------------------------------------------


def test_ops_and_dimensions_without_a_teacher_counterpart_keep_their_init():
    teacher = random_teacher()  # width 32, 4 heads of 8, inner 64
    # Hidden 48 and inner 96 exceed the teacher's; conv and id have no counterpart.
    supernet = supernet_for(teacher, hidden_sizes=(16, 48), ops=("mha:2", "ffn:96", "conv:3", "id"))
    data = batches(2)
    bases = fit_boundary_bases(teacher, data, teacher.num_layers, 48)
    supernet.fit_projections(bases)
    before = {name: tensor.clone() for name, tensor in supernet.state_dict().items()}
    done = inherit_from_teacher(supernet, teacher, bases, teacher_importance(teacher, data))
    assert sorted({key for _, _, key, _ in done}) == ["ffn", "mha"] and len(done) == 2 * 2 * 2
    after = supernet.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(".ops.mha." in name or ".ops.ffn." in name for name in changed)
    for block in range(2):
        for slot in range(2):
            prefix = f"blocks.{block}.slots.{slot}.ops."
            old = lambda name: before[prefix + name]  # noqa: E731
            new = lambda name: after[prefix + name]  # noqa: E731
            for name in ("query", "key", "value"):
                # Rows (query dims) and columns (hidden coordinates) beyond the teacher's 32 are untouched.
                assert torch.equal(new(f"mha.{name}.weight")[32:], old(f"mha.{name}.weight")[32:])
                assert torch.equal(new(f"mha.{name}.weight")[:, 32:], old(f"mha.{name}.weight")[:, 32:])
                assert not torch.equal(new(f"mha.{name}.weight")[:32, :32], old(f"mha.{name}.weight")[:32, :32])
            assert torch.equal(new("mha.output.weight")[32:], old("mha.output.weight")[32:])
            assert torch.equal(new("mha.output.weight")[:, 32:], old("mha.output.weight")[:, 32:])
            assert torch.equal(new("ffn.intermediate.weight")[64:], old("ffn.intermediate.weight")[64:])
            assert torch.equal(new("ffn.intermediate.weight")[:, 32:], old("ffn.intermediate.weight")[:, 32:])
            assert torch.equal(new("ffn.output.weight")[32:], old("ffn.output.weight")[32:])
            assert torch.equal(new("ffn.output.weight")[:, 64:], old("ffn.output.weight")[:, 64:])
            assert torch.equal(new("ffn.intermediate.bias")[64:], old("ffn.intermediate.bias")[64:])


# -- (iv) teachers without BERT-style layers ---------------------------------------------------


def test_a_teacher_without_bert_style_layers_is_refused():
    config = DistilBertConfig(vocab_size=VOCAB, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=64)
    teacher = Teacher(model=DistilBertModel(config).eval(), tokenizer=None, mlm_head=None, name="distilbert")
    with pytest.raises(ValueError, match="no BERT-style layer 0"):
        teacher.layer(0)
    with pytest.raises(ValueError, match="BERT-family teachers"):
        teacher_importance(teacher, batches(1))
    space = SearchSpace([16], ["mha:2", "ffn:32"], 4, 2)
    importance = TeacherImportance(torch.ones(2, 2), torch.ones(2, 32), 1)
    with pytest.raises(ValueError, match="BERT-style"):
        inherit_from_teacher(Supernet(space, 16), teacher, identity_bases(3, 16, 16), importance)
    with pytest.raises(ValueError, match="out of range"):
        random_teacher().layer(LAYERS)


def test_mismatched_bases_are_refused():
    teacher = random_teacher()
    supernet = supernet_for(teacher)
    importance = teacher_importance(teacher, batches(1))
    with pytest.raises(ValueError, match="boundary bases"):
        inherit_from_teacher(supernet, teacher, identity_bases(2), importance)
    with pytest.raises(ValueError, match="layer bases"):
        inherit_from_teacher(supernet, teacher, identity_bases(3), importance, layer_bases=identity_bases(2))
