import copy

import pytest
import torch
from torch import nn

from emdqn.agent.loss import Batch, clip_grad_norm_per_tensor, emdqn_loss, td_targets
from emdqn.agent.networks import MLP, ONEDNN_MATMUL, NatureCNN, OneDNNLinear, tf_same_padding
from emdqn.agent.schedules import PiecewiseLinearSchedule


class TableQ(nn.Module):
    """Q(s, .) read from a table row: obs is the state index."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, obs):
        return self.table[obs.long()]


def tiny_batch(**overrides):
    batch = {
        "obs": torch.tensor([0, 1]),
        "actions": torch.tensor([1, 0]),
        "rewards": torch.tensor([1.0, -1.0]),
        "next_obs": torch.tensor([1, 2]),
        "terminated": torch.tensor([False, True]),
        "discounts": torch.tensor([0.9, 0.9]),
        "memory_values": torch.tensor([3.0, 0.0]),
        "memory_found": torch.tensor([True, False]),
    }
    batch.update(overrides)
    return Batch(**batch)


def test_td_target_by_hand():
    target = TableQ([[0.0, 0.0], [2.0, 5.0], [7.0, 1.0]])
    targets = td_targets(target, None, tiny_batch())
    # s'=1 bootstraps with max(2, 5); the terminated row keeps only its reward.
    assert targets.tolist() == pytest.approx([1.0 + 0.9 * 5.0, -1.0])


def test_truncation_bootstraps():
    target = TableQ([[0.0, 0.0], [2.0, 5.0], [7.0, 1.0]])
    batch = tiny_batch(terminated=torch.tensor([False, False]))
    assert td_targets(target, None, batch)[1].item() == pytest.approx(-1.0 + 0.9 * 7.0)


def test_double_q_target_uses_online_argmax_and_target_value():
    target = TableQ([[0.0, 0.0], [2.0, 5.0], [7.0, 1.0]])
    online = TableQ([[0.0, 0.0], [9.0, 0.0], [0.0, 0.0]])  # prefers action 0 at s'=1
    targets = td_targets(target, online, tiny_batch())
    assert targets[0].item() == pytest.approx(1.0 + 0.9 * 2.0)


def test_emdqn_loss_by_hand():
    online = TableQ([[0.0, 1.0], [0.5, 0.0], [0.0, 0.0]])
    target = TableQ([[0.0, 0.0], [2.0, 5.0], [7.0, 1.0]])
    parts = emdqn_loss(online, target, tiny_batch(), alpha=1.0, beta=0.5)
    huber = torch.nn.functional.huber_loss
    td = (huber(torch.tensor(1.0), torch.tensor(5.5)) + huber(torch.tensor(0.5), torch.tensor(-1.0))) / 2
    memory = huber(torch.tensor(1.0), torch.tensor(3.0)) / 2  # one hit, averaged over the batch of 2
    assert parts["td_loss"].item() == pytest.approx(td.item())
    assert parts["memory_loss"].item() == pytest.approx(memory.item())
    assert parts["loss"].item() == pytest.approx(td.item() + 0.5 * memory.item())
    hits_only = emdqn_loss(online, target, tiny_batch(), alpha=1.0, beta=0.5, average="hits")
    assert hits_only["memory_loss"].item() == pytest.approx(2 * memory.item())


@pytest.mark.parametrize("memory_found", [torch.tensor([True, False]), torch.tensor([False, False])])
def test_beta_zero_gives_exactly_the_dqn_loss_and_gradients(memory_found):
    torch.manual_seed(0)
    net = MLP((3,), 2, hidden_sizes=(8, 8))
    target = copy.deepcopy(net)
    batch = {"obs": torch.randn(2, 3), "actions": torch.tensor([1, 0]), "rewards": torch.tensor([1.0, 0.0]),
             "next_obs": torch.randn(2, 3), "terminated": torch.tensor([False, True]),
             "discounts": torch.tensor([0.99, 0.99]),
             "memory_values": torch.tensor([30.0, 1.0]), "memory_found": memory_found}
    batch = Batch(**batch)

    def gradients(**weights):
        net.zero_grad()
        parts = emdqn_loss(net, target, batch, **weights)
        parts["loss"].backward()
        return parts["loss"].item(), [p.grad.clone() for p in net.parameters()]

    # Plain DQN written out: Huber(Q - S), nothing else.
    net.zero_grad()
    q = net(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
    dqn = torch.nn.functional.huber_loss(q, td_targets(target, None, batch))
    dqn.backward()
    dqn_grads = [p.grad.clone() for p in net.parameters()]
    loss, grads = gradients(alpha=1.0, beta=0.0)
    assert loss == dqn.item()
    assert all(torch.equal(a, b) for a, b in zip(grads, dqn_grads))


def test_per_tensor_gradient_clipping():
    a = nn.Parameter(torch.zeros(2))
    b = nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([30.0, 40.0])  # norm 50 -> scaled to 10
    b.grad = torch.tensor([3.0, 4.0])    # norm 5 -> untouched (a global norm would shrink it)
    clip_grad_norm_per_tensor([a, b], 10.0)
    assert a.grad.tolist() == pytest.approx([6.0, 8.0], rel=1e-5)
    assert b.grad.tolist() == pytest.approx([3.0, 4.0])


@pytest.mark.parametrize("scale", [1e-3, 100.0])
def test_per_tensor_clipping_matches_torch_per_tensor(scale):
    """Same values as torch's clip_grad_norm_ called per tensor, with or without clipping."""
    net = NatureCNN((4, 84, 84), 6, padding="valid")
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=generator) * scale for p in net.parameters()]
    expected = [g.clone() for g in grads]
    for grad in expected:
        holder = nn.Parameter(torch.zeros_like(grad))
        holder.grad = grad
        torch.nn.utils.clip_grad_norm_([holder], 10.0)
    for param, grad in zip(net.parameters(), grads):
        param.grad = grad.clone()
    clip_grad_norm_per_tensor(list(net.parameters()), 10.0)
    for param, reference in zip(net.parameters(), expected):
        torch.testing.assert_close(param.grad, reference, rtol=1e-6, atol=0)
    if scale < 1:  # nothing to clip: the gradients are left bit for bit as they were
        assert all(torch.equal(param.grad, grad) for param, grad in zip(net.parameters(), grads))


def test_nature_cnn_same_padding_matches_the_original_layer_sizes():
    assert tf_same_padding(84, 8, 4) == (2, 2)
    net = NatureCNN((4, 84, 84), 6, padding="same")
    assert net.flat_features == 7744
    assert NatureCNN((4, 84, 84), 6, padding="valid").flat_features == 3136
    out = net(torch.zeros(2, 4, 84, 84, dtype=torch.uint8))
    assert out.shape == (2, 6)
    dueling = NatureCNN((4, 84, 84), 6, dueling=True)
    assert dueling(torch.zeros(1, 4, 84, 84, dtype=torch.uint8)).shape == (1, 6)
    for layer in net.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            assert torch.count_nonzero(layer.bias) == 0


def test_epsilon_schedule_of_the_original():
    schedule = PiecewiseLinearSchedule([[0, 1.0], [200_000, 0.1], [2_000_000, 0.01]])
    assert schedule(0) == 1.0
    assert schedule(100_000) == pytest.approx(0.55)
    assert schedule(200_000) == pytest.approx(0.1)
    assert schedule(1_100_000) == pytest.approx(0.055)
    assert schedule(10_000_000) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="increase"):
        PiecewiseLinearSchedule([[10, 1.0], [5, 0.1]])


@pytest.mark.parametrize("name", ["mlp", "nature_cnn"])
def test_compiled_and_eager_networks_agree(name):
    """trainer.compile=true must not change what is computed (inductor on CPU)."""
    torch.manual_seed(0)
    if name == "mlp":
        network, obs = MLP((8,), 3, hidden_sizes=(16, 16)), torch.randn(5, 8)
    else:
        network, obs = NatureCNN((4, 84, 84), 6), torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    compiled = torch.compile(network)
    with torch.no_grad():
        torch.testing.assert_close(compiled(obs), network(obs), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not ONEDNN_MATMUL, reason="this torch build has no oneDNN matmul")
@pytest.mark.parametrize("batch", [1, 32])
def test_onednn_linear_computes_what_nn_linear_computes(batch):
    """Outputs and all three gradients within fp32 rounding; the same state-dict keys."""
    torch.manual_seed(0)
    reference = nn.Linear(3136, 512)
    onednn = OneDNNLinear(3136, 512)
    onednn.load_state_dict(reference.state_dict())
    features = torch.rand(batch, 3136)
    upstream = torch.randn(batch, 512)
    grads = []
    for layer in (reference, onednn):
        inputs = features.clone().requires_grad_(True)
        output = layer(inputs)
        output.backward(upstream)
        grads.append((output.detach(), inputs.grad, layer.weight.grad, layer.bias.grad))
    for expected, actual in zip(*grads):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: torch's own path
        assert onednn(features).dtype == torch.bfloat16


@pytest.mark.skipif(not ONEDNN_MATMUL, reason="this torch build has no oneDNN matmul")
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_nature_cnn_dense_layers_on_onednn_learn_the_same_step(padding):
    """trainer.onednn_linear changes no parameter and gives the loss and gradients of nn.Linear."""
    torch.manual_seed(0)
    onednn = NatureCNN((4, 84, 84), 6, padding=padding, onednn_linear=True)
    reference = NatureCNN((4, 84, 84), 6, padding=padding, onednn_linear=False)
    reference.load_state_dict(onednn.state_dict())
    assert isinstance(onednn.head.advantage[0], OneDNNLinear)
    assert type(reference.head.advantage[0]) is nn.Linear
    obs = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    grads = []
    for network in (reference, onednn):
        network(obs).pow(2).sum().backward()
        grads.append([parameter.grad for parameter in network.parameters()])
    for expected, actual in zip(*grads):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    with torch.inference_mode():  # acting
        torch.testing.assert_close(onednn(obs[:1]), reference(obs[:1]), rtol=1e-4, atol=1e-5)


def test_same_padding_equals_explicit_tf_padding_on_every_layer():
    torch.manual_seed(0)
    net = NatureCNN((4, 84, 84), 6, padding="same")
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    hidden, size = obs.float() / 255, 84
    for conv in [m for m in net.torso if isinstance(m, nn.Conv2d)]:
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        before, after = tf_same_padding(size, kernel, stride)
        padded = torch.nn.functional.pad(hidden, (before, after, before, after))
        hidden = torch.relu(torch.nn.functional.conv2d(padded, conv.weight, conv.bias, stride))
        size = -(-size // stride)
    torch.testing.assert_close(net(obs), net.head(hidden.flatten(1)))


def test_scaling_folded_into_the_first_conv_equals_scaling_the_input():
    torch.manual_seed(0)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    for padding in ("same", "valid"):
        net = NatureCNN((4, 84, 84), 6, padding=padding)
        torch.testing.assert_close(net(obs), net.head(net.torso(obs.float() / 255)))


def test_channels_last_changes_only_the_memory_layout():
    torch.manual_seed(0)
    nhwc = NatureCNN((4, 84, 84), 6, channels_last=True)
    nchw = NatureCNN((4, 84, 84), 6, channels_last=False)
    nchw.load_state_dict(nhwc.state_dict())
    assert nhwc.torso[0].weight.is_contiguous(memory_format=torch.channels_last)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(nhwc(obs), nchw(obs))


@pytest.mark.parametrize("dueling", [False, True])
def test_under_bf16_autocast_the_q_values_stay_float32(dueling):
    """trainer.precision=bf16-mixed: the torso runs in bf16, the output layer in fp32."""
    torch.manual_seed(0)
    network = NatureCNN((4, 84, 84), 6, padding="valid", dueling=dueling)
    obs = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = network(obs)
        features = network.torso(obs.float() / 255)
    assert features.dtype == torch.bfloat16 and mixed.dtype == torch.float32
    exact = network(obs)
    # bf16 rounds the torso's activations (8 bits of mantissa): close, not equal, to fp32.
    torch.testing.assert_close(mixed, exact, rtol=0.05, atol=0.02 * exact.abs().max().item())
    assert not torch.equal(mixed, exact)
