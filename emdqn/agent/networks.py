"""Q-network builders chosen by the ``model`` config group."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from emdqn.config.choices import MODEL_NAMES, PADDINGS


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding that TensorFlow's 'SAME' adds along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


ONEDNN_MATMUL = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class _OneDNNLinearFunction(torch.autograd.Function):
    """x @ W^T + b and its two gradient products, each one oneDNN fp32 matmul."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(features, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(features, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        features, weight = ctx.saved_tensors
        matmul = torch.ops.mkldnn._linear_pointwise  # computes a @ b^T: pass b transposed
        grad_output = grad_output.contiguous()
        grad_features = matmul(grad_output, weight.t(), None, "none", [], "") if ctx.needs_input_grad[0] else None
        grad_weight = matmul(grad_output.t(), features.t(), None, "none", [], "") if ctx.needs_input_grad[1] else None
        grad_bias = grad_output.sum(dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_features, grad_weight, grad_bias


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose fp32 CPU products (forward and both gradients) run on oneDNN.

    PyTorch sends fp32 CPU matrix products to MKL, which on AMD CPUs takes a path without
    AVX-512; oneDNN (the library PyTorch's convolutions already use) does not
    (``benchmarks/speed/linear_backends.py`` measures both; docs/performance.md has the figures).
    Same parameters and state-dict keys; the sums are still fp32, in another order (outputs
    agree with ``F.linear`` within fp32 rounding, tested). Elsewhere (GPU, autocast, other
    dtypes, N-d inputs, inside ``torch.compile``, whose CPU backend lowers this op only
    for its own prepacked weights) it is ``F.linear``.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if (features.device.type == "cpu" and features.dim() == 2 and features.dtype == torch.float32
                and self.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
                and not torch.compiler.is_compiling() and ONEDNN_MATMUL):
            return _OneDNNLinearFunction.apply(features, self.weight, self.bias)
        return F.linear(features, self.weight, self.bias)


class QHead(nn.Module):
    """Linear Q head, or a dueling head V(s) + A(s,a) - mean_a A(s,a)."""

    def __init__(self, in_features: int, hidden: int, num_actions: int, dueling: bool,
                 linear: type[nn.Linear] = nn.Linear):
        super().__init__()
        self.dueling = dueling
        self.advantage = nn.Sequential(linear(in_features, hidden), nn.ReLU(), linear(hidden, num_actions))
        if dueling:
            self.value = nn.Sequential(linear(in_features, hidden), nn.ReLU(), linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        advantage = self._stream(self.advantage, features)
        if not self.dueling:
            return advantage
        return self._stream(self.value, features) + advantage - advantage.mean(dim=1, keepdim=True)

    @staticmethod
    def _stream(stream: nn.Sequential, features: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(features.device.type):
            return stream(features)
        # Under mixed precision (trainer.precision=bf16-mixed) only the output layer stays
        # fp32: bf16 keeps 8 bits of mantissa, a step of 0.5 at a Q-value of 100, coarser
        # than the TD errors learned from. The layer is 0.02% of the network's work.
        hidden = stream[1](stream[0](features))
        with torch.autocast(features.device.type, enabled=False):
            return stream[2](hidden.float())


class NatureCNN(nn.Module):
    """The Nature DQN torso; ``padding='same'`` reproduces the original TF layer sizes (7744)."""

    def __init__(self, obs_shape: Sequence[int], num_actions: int, padding: str = "same",
                 hidden: int = 512, dueling: bool = False, input_scale: float = 255.0, channels_last: bool = True,
                 onednn_linear: bool = True):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"model.padding={padding!r} is not allowed; choose one of {PADDINGS}")
        if len(obs_shape) != 3:
            raise ValueError(f"model=nature_cnn needs (stack, height, width) observations, got shape {tuple(obs_shape)}")
        channels, height, width = obs_shape
        layers: list[nn.Module] = []
        for out_channels, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
            conv_padding: tuple[int, int] | int = 0
            if padding == "same":
                top, bottom = tf_same_padding(height, kernel, stride)
                left, right = tf_same_padding(width, kernel, stride)
                if (top, left) == (bottom, right):  # symmetric: the conv pads itself (one op less)
                    conv_padding = (top, left)
                else:  # TF puts the odd pixel after: a separate pad layer
                    layers.append(nn.ZeroPad2d((left, right, top, bottom)))
                height, width = math.ceil(height / stride), math.ceil(width / stride)
            else:
                height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
            layers += [nn.Conv2d(channels, out_channels, kernel, stride, padding=conv_padding), nn.ReLU()]
            channels = out_channels
        self.torso = nn.Sequential(*layers, nn.Flatten())
        first = next(index for index, layer in enumerate(self.torso) if isinstance(layer, nn.Conv2d))
        self._before_first_conv = tuple(self.torso[:first])  # plain tuples: already registered in torso
        self._first_conv = self.torso[first]
        self._after_first_conv = tuple(self.torso[first + 1:])
        self.flat_features = channels * height * width
        self.head = QHead(self.flat_features, hidden, num_actions, dueling,
                          linear=OneDNNLinear if onednn_linear else nn.Linear)
        self.register_buffer("input_scale", torch.tensor(float(input_scale)), persistent=False)
        xavier_init(self)
        # NHWC convolutions skip oneDNN's layout conversions (~10% per update on CPU). Only
        # the memory layout changes: parameters, checkpoints and outputs stay the same.
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # Observations stay uint8 until here (a layout change of uint8 is 4x cheaper than of
        # floats). conv(x / 255) = conv with weights / 255: dividing the first conv's 8k
        # weights instead of the 900k inputs of a batch saves a full pass.
        if self.channels_last:
            obs = obs.contiguous(memory_format=torch.channels_last)
        features = obs.float()
        for layer in self._before_first_conv:
            features = layer(features)
        conv = self._first_conv
        features = conv._conv_forward(features, conv.weight / self.input_scale, conv.bias)
        for layer in self._after_first_conv:
            features = layer(features)
        return self.head(features)


class MinAtarCNN(nn.Module):
    """MinAtar's DQN network (Young & Tian 2019): conv 16 3x3 stride 1, ReLU, dense 128, ReLU, Q-values.

    The layer sizes and PyTorch's default initialisation of MinAtar's ``examples/dqn.py``.
    """

    def __init__(self, obs_shape: Sequence[int], num_actions: int, filters: int = 16, hidden: int = 128,
                 dueling: bool = False):
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"model=minatar_cnn needs (channels, height, width) observations, got {tuple(obs_shape)}")
        channels, height, width = obs_shape
        self.torso = nn.Sequential(nn.Conv2d(channels, filters, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten())
        self.flat_features = filters * (height - 2) * (width - 2)
        self.head = QHead(self.flat_features, hidden, num_actions, dueling)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs.float()))


class MLP(nn.Module):
    """A small fully connected Q-network for flat observations."""

    def __init__(self, obs_shape: Sequence[int], num_actions: int, hidden_sizes: Sequence[int] = (120, 84),
                 dueling: bool = False, input_scale: float = 1.0):
        super().__init__()
        if len(hidden_sizes) < 1:
            raise ValueError("model.hidden_sizes needs at least one layer size")
        in_features = int(math.prod(obs_shape))
        layers: list[nn.Module] = [nn.Flatten()]
        for size in hidden_sizes[:-1]:
            layers += [nn.Linear(in_features, size), nn.ReLU()]
            in_features = size
        self.torso = nn.Sequential(*layers)
        self.head = QHead(in_features, hidden_sizes[-1], num_actions, dueling)
        self.register_buffer("input_scale", torch.tensor(float(input_scale)), persistent=False)
        xavier_init(self)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs.float() / self.input_scale))


def xavier_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases, TensorFlow's defaults in the original code."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def build_q_network(model_cfg: Any, obs_shape: Sequence[int], num_actions: int,
                    trainer_cfg: Any = None) -> nn.Module:
    """Instantiate the Q-network named by ``model.name``, with the layout switches of
    ``trainer_cfg`` (``trainer.channels_last``, ``trainer.onednn_linear``; both on if not given)."""
    name = model_cfg.name
    switches = trainer_cfg if trainer_cfg is not None else {}
    if name == "nature_cnn":
        return NatureCNN(obs_shape, num_actions, padding=model_cfg.padding, hidden=model_cfg.hidden,
                         dueling=model_cfg.dueling, input_scale=model_cfg.input_scale,
                         channels_last=switches.get("channels_last", True),
                         onednn_linear=switches.get("onednn_linear", True))
    if name == "mlp":
        return MLP(obs_shape, num_actions, hidden_sizes=list(model_cfg.hidden_sizes), dueling=model_cfg.dueling,
                   input_scale=model_cfg.input_scale)
    if name == "minatar_cnn":
        return MinAtarCNN(obs_shape, num_actions, filters=model_cfg.filters, hidden=model_cfg.hidden,
                          dueling=model_cfg.dueling)
    raise ValueError(f"model.name={name!r} is unknown; allowed: {', '.join(MODEL_NAMES)}")
