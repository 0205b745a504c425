"""The paper's networks: AttentionNet, ACAB, EnhancementNet and IllExpNet (attention -> enhancement).

Choices where the paper (Messias, Drews-Jr, Botelho) is vague, written down here:

* Block order is conv -> BatchNorm -> ELU (the authors' code has ELU and BatchNorm after each conv).
* AttentionNet: 7 dilated 3x3 conv blocks of width 24 with dilation 2^(n-1) = 1..64, then a 3x3 conv block
  and a 1x1 conv to a 3-channel map squashed by a sigmoid, so the map lives in [0, 1] like eq. 1/2.
* The enhancement net sees the frame and the exposure map concatenated (6 channels): the paper says the map
  "directs" the restoration network but not how; concatenation is the simplest form that lets the network
  learn where to look, and it keeps the no-attention ablation a one-line change (3 input channels).
* ACAB: four parallel 3x3 convs with out/4 channels each and dilations 1, 2, 4, 8, concatenated, ELU,
  CBAM channel attention (avg- and max-pooled descriptors through a shared 2-layer MLP, reduction 8, summed,
  sigmoid), CBAM spatial attention (channel-wise max and mean, 7x7 conv, sigmoid), then a 1x1 conv + ELU.
* EnhancementNet: ACAB at full resolution (32), then 3 levels of stride-2 conv + ACAB (64, 128, 256);
  decoder: nearest x2 upsampling + 3x3 conv, concatenation with the encoder skip, an ACAB to fuse. The top
  skip is two 3x3 convs on the first block's output; the fusion is BatchNorm + 3x3 conv + 1x1 conv to RGB
  with a sigmoid.
* Any H x W: the input is replicate-padded to a multiple of 8 (three stride-2 levels) and the output cropped.

Two choices beyond the paper, both model-config keys (files without them load as the paper's net):

* padding: "replicate" pads every convolution with edge values instead of zeros. With zero padding a dilated
  conv (dilation up to 64 in the attention net) sees black in some taps exactly up to `dilation` pixels from
  each border and real pixels beyond: the exposure map and the output then carry straight seams parallel to
  the frame borders, at the dilation distances, worst at the small internal sizes of fast mode.
* head: "tone" replaces the paper's sigmoid RGB output by a per-pixel, colour-preserving tone operator
  applied to the input frame x: the net predicts three maps (log-gain g, offset o, log-saturation s) and
      out = exp(g) * (Y + exp(s) * (x - Y)) + o,      Y = Rec. 601 luma of x, clamped to [0, 1].
  Why: predicting RGB from scratch makes an under-trained net fall back to the training photos' average
  colours (a teal cast on every frame, measured), and a well-exposed frame has to be re-synthesised instead
  of passed through. With the tone head a grey frame (x = Y) stays exactly grey, a frame's own colours are
  carried through (the gain scales all channels alike, which is also what an exposure change does in a
  gamma-encoded image), and all-zero predictions are the identity, so training starts from "leave it alone".
  The cost: colour that clipping destroyed cannot be re-invented (a blown-out white sky stays neutral).
  head: "rgb" is the paper's output layer (kept for the paper-faithful configs and old model files).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from illexp_ros.core.exposure import LUMA_WEIGHTS

STRIDE_MULTIPLE = 8
PADDING_MODES = ("zeros", "replicate")
HEADS = ("rgb", "tone")
LOG_GAIN_MAX = 4.0  # tone head: gain in [e^-4, e^4] ~ [0.018, 55], enough for the darkest training draws
LOG_SATURATION_MAX = 1.0  # tone head: saturation scale in [1/e, e]


def conv2d(in_ch: int, out_ch: int, kernel: int = 3, dilation: int = 1, stride: int = 1, bias: bool = True,
           padding_mode: str = "zeros") -> nn.Conv2d:
    """A 'same'-padded conv; padding_mode 'replicate' avoids the border seams of zero padding."""
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding_mode!r}")
    padding = dilation * (kernel - 1) // 2
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias,
                     padding_mode=padding_mode)


def conv_bn_elu(in_ch: int, out_ch: int, kernel: int = 3, dilation: int = 1, stride: int = 1,
                padding_mode: str = "zeros") -> nn.Sequential:
    return nn.Sequential(
        conv2d(in_ch, out_ch, kernel, dilation=dilation, stride=stride, bias=False, padding_mode=padding_mode),
        nn.BatchNorm2d(out_ch),
        nn.ELU(inplace=True),
    )


def apply_tone(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The tone head's operator (module docstring): x N x 3 x H x W RGB, params N x 3 x H x W raw net outputs."""
    params = params.float()
    x = x.float()
    log_gain = LOG_GAIN_MAX * torch.tanh(params[:, 0:1] / LOG_GAIN_MAX)
    offset = torch.tanh(params[:, 1:2])
    log_sat = LOG_SATURATION_MAX * torch.tanh(params[:, 2:3] / LOG_SATURATION_MAX)
    w = LUMA_WEIGHTS
    luma = x[:, 0:1] * w[0] + x[:, 1:2] * w[1] + x[:, 2:3] * w[2]
    out = torch.exp(log_gain) * (luma + torch.exp(log_sat) * (x - luma)) + offset
    return out.clamp(0.0, 1.0)


def pad_to_multiple(x: torch.Tensor, multiple: int = STRIDE_MULTIPLE) -> tuple[torch.Tensor, int, int]:
    """Replicate-pad the bottom/right of an NCHW tensor to a multiple of `multiple`; returns (x, H, W)."""
    h, w = x.shape[-2], x.shape[-1]
    pad_h = (-h) % multiple
    pad_w = (-w) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, h, w


class AttentionNet(nn.Module):
    """Predicts the 3-channel exposure map (eq. 1/2) from the degraded frame."""

    def __init__(self, in_channels: int = 3, width: int = 24, depth: int = 7, out_channels: int = 3,
                 padding_mode: str = "zeros") -> None:
        super().__init__()
        blocks = []
        ch = in_channels
        for n in range(depth):
            blocks.append(conv_bn_elu(ch, width, dilation=2**n, padding_mode=padding_mode))
            ch = width
        self.context = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            conv_bn_elu(width, width, padding_mode=padding_mode),
            nn.Conv2d(width, out_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.context(x))


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    def __init__(self, kernel: int = 7, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.conv = conv2d(2, 1, kernel, padding_mode=padding_mode)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The per-pixel gate in [0, 1] (N x 1 x H x W) that forward multiplies x by."""
        desc = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(desc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class ACAB(nn.Module):
    """Attention and Context Aggregation Block: 4 parallel dilated convs, channel + spatial attention."""

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int] = (1, 2, 4, 8),
                 padding_mode: str = "zeros") -> None:
        super().__init__()
        if out_channels % len(dilations):
            raise ValueError(f"ACAB out_channels={out_channels} must divide by {len(dilations)} branches")
        branch = out_channels // len(dilations)
        self.branches = nn.ModuleList(
            conv2d(in_channels, branch, 3, dilation=d, padding_mode=padding_mode) for d in dilations
        )
        self.act = nn.ELU(inplace=True)
        self.channel_attention = ChannelAttention(out_channels)
        self.spatial_attention = SpatialAttention(padding_mode=padding_mode)
        self.project = nn.Sequential(nn.Conv2d(out_channels, out_channels, 1), nn.ELU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(torch.cat([b(x) for b in self.branches], dim=1))
        y = self.spatial_attention(self.channel_attention(y))
        return self.project(y)


def _block(in_ch: int, out_ch: int, use_acab: bool, padding_mode: str) -> nn.Module:
    # The "w/o ACAB" ablation swaps each ACAB for a plain conv block of the same widths.
    if use_acab:
        return ACAB(in_ch, out_ch, padding_mode=padding_mode)
    return conv_bn_elu(in_ch, out_ch, padding_mode=padding_mode)


class EnhancementNet(nn.Module):
    """U-Net + context aggregation restoration network; input frame (+ exposure map), output RGB in [0, 1].

    The first three input channels are the frame; the tone head applies its operator to them.
    """

    def __init__(
        self, in_channels: int = 6, widths: Sequence[int] = (32, 64, 128, 256), use_acab: bool = True,
        padding_mode: str = "zeros", head: str = "rgb",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        widths = list(widths)
        if len(widths) < 2:
            raise ValueError("EnhancementNet needs at least two widths (one downsampling level)")
        pm = padding_mode
        self.head = head
        self.levels = len(widths) - 1
        self.stem = _block(in_channels, widths[0], use_acab, pm)
        self.down = nn.ModuleList(conv_bn_elu(widths[i], widths[i + 1], stride=2, padding_mode=pm)
                                  for i in range(self.levels))
        self.encode = nn.ModuleList(_block(widths[i + 1], widths[i + 1], use_acab, pm) for i in range(self.levels))
        self.up = nn.ModuleList(conv_bn_elu(widths[i + 1], widths[i], padding_mode=pm) for i in range(self.levels))
        self.decode = nn.ModuleList(_block(2 * widths[i], widths[i], use_acab, pm) for i in range(self.levels))
        self.top_skip = nn.Sequential(conv_bn_elu(widths[0], widths[0], padding_mode=pm),
                                      conv_bn_elu(widths[0], widths[0], padding_mode=pm))
        # Same layers (and state-dict keys) for both heads; only the rgb head squashes with a sigmoid.
        self.fusion = nn.Sequential(
            nn.BatchNorm2d(2 * widths[0]),
            conv2d(2 * widths[0], widths[0], 3, padding_mode=pm),
            nn.ELU(inplace=True),
            nn.Conv2d(widths[0], 3, 1),
            nn.Sigmoid() if head == "rgb" else nn.Identity(),
        )
        if head == "tone":
            self.reset_output_layer()

    def reset_output_layer(self) -> None:
        """Tone head: zero the last conv, so the net starts as the identity (gain 1, offset 0, saturation 1)."""
        nn.init.zeros_(self.fusion[3].weight)
        nn.init.zeros_(self.fusion[3].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.stem(x)
        skips = [first]
        y = first
        for down, enc in zip(self.down, self.encode):
            y = enc(down(y))
            skips.append(y)
        for i in reversed(range(self.levels)):
            y = self.up[i](F.interpolate(y, scale_factor=2.0, mode="nearest"))
            y = self.decode[i](torch.cat([y, skips[i]], dim=1))
        out = self.fusion(torch.cat([y, self.top_skip(first)], dim=1))
        return apply_tone(x[:, :3], out) if self.head == "tone" else out


class IllExpNet(nn.Module):
    """Attention network -> enhancement network. forward(x) returns (corrected, exposure_map).

    x: N x 3 x H x W float in [0, 1], any H and W. With use_attention=False (the paper's "w/o AN"
    ablation) the exposure map returned is all zeros and the enhancement net sees only the frame.
    """

    def __init__(
        self,
        attention_width: int = 24,
        attention_depth: int = 7,
        widths: Sequence[int] = (32, 64, 128, 256),
        use_attention: bool = True,
        use_acab: bool = True,
        padding: str = "zeros",
        head: str = "rgb",
    ) -> None:
        super().__init__()
        self.use_attention = use_attention
        self.attention = (AttentionNet(width=attention_width, depth=attention_depth, padding_mode=padding)
                          if use_attention else None)
        self.enhancement = EnhancementNet(in_channels=6 if use_attention else 3, widths=widths, use_acab=use_acab,
                                          padding_mode=padding, head=head)
        self.stride_multiple = 2 ** (len(list(widths)) - 1)

    def forward_aligned(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward for H, W already multiples of `stride_multiple` (what exporters trace)."""
        if self.attention is None:
            return self.enhancement(x), torch.zeros_like(x)
        em = self.attention(x)
        return self.enhancement(torch.cat([x, em], dim=1)), em

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xp, h, w = pad_to_multiple(x, self.stride_multiple)
        out, em = self.forward_aligned(xp)
        return out[..., :h, :w], em[..., :h, :w]


class ChannelAffine(nn.Module):
    """x * scale + shift per channel: an eval-mode BatchNorm with no preceding conv to fold into."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        with torch.no_grad():
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            shift = bn.bias.double() - bn.running_mean.double() * scale
        self.register_buffer("scale", scale.float().view(1, -1, 1, 1))
        self.register_buffer("shift", shift.float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` for inference, with every BatchNorm folded away: into the conv before it
    (conv -> BN in one nn.Sequential), else into a per-channel affine. Same function up to float rounding.

    Why: a BatchNorm's running variance can exceed the float16 range (65504; activations with a standard
    deviation above ~256 do, measured in the shipped paper-sized nets), and the fp16 backends (torch_cuda,
    TensorRT, ONNX fp16) would then divide by infinity. Folded in float64 the conv weights and the affine stay
    small. It also saves the BatchNorm passes on every backend.
    """
    folded = copy.deepcopy(model).eval()
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i, layer in enumerate(seq):
            if not isinstance(layer, nn.BatchNorm2d):
                continue
            prev = seq[i - 1] if i > 0 else None
            if isinstance(prev, nn.Conv2d):
                seq[i - 1] = _fuse_conv_bn(prev, layer)
                seq[i] = nn.Identity()
            else:
                seq[i] = ChannelAffine(layer)
    for name, child in list(folded.named_modules()):  # a BatchNorm outside an nn.Sequential (none today)
        if isinstance(child, nn.BatchNorm2d):
            parent = folded.get_submodule(name.rpartition(".")[0]) if "." in name else folded
            setattr(parent, name.rpartition(".")[2], ChannelAffine(child))
    return folded


def _fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """torch's conv+BN fusion, done in float64 so a huge running variance loses no precision."""
    fused = fuse_conv_bn_eval(copy.deepcopy(conv).double(), copy.deepcopy(bn).double())
    return fused.float()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


MODEL_CONFIG_KEYS = frozenset({"attention_width", "attention_depth", "widths", "use_attention", "use_acab",
                               "padding", "head"})


def build_model(config: dict | None = None) -> IllExpNet:
    """Build an IllExpNet from the `model:` section of a training config (keys = constructor args)."""
    config = dict(config or {})
    allowed = MODEL_CONFIG_KEYS
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(f"unknown model config keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return IllExpNet(**config)
