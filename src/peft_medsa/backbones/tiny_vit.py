"""TinyViT image encoder (LiteMedSAM / MobileSAM variant) as a drop-in for transformers' `SamVisionEncoder`.

TinyViT (Wu et al., ECCV 2022, https://huggingface.co/papers/2207.10666) is a hierarchical vision transformer: a
convolutional stem, one stage of MBConv blocks, then stages of TinyViT blocks (windowed self-attention with learned
relative-position attention biases, a depthwise "local" convolution, an MLP), with patch merging between stages.
MobileSAM distilled SAM's ViT-H into it and LiteMedSAM fine-tuned that on medical images; both add SAM's neck
(two convolutions and channel LayerNorms to 256 channels). LiteMedSAM's variant takes 256x256 images, keeps full
resolution in the stem (1x1 convolutions) and returns a `(batch_size, 256, 64, 64)` embedding, exactly what
`SamMaskDecoder` expects from `SamVisionEncoder`.

Module names (they equal the published LiteMedSAM state dict's `image_encoder.*` names, except the neck):

    patch_embed.seq.{0,2}.{c,bn}                         stem: 1x1 Conv2d + BatchNorm, GELU, 1x1 Conv2d + BatchNorm
    layers.0.blocks.M.{conv1,conv2,conv3}.{c,bn}         MBConv blocks (`TinyViTMBConv`), NCHW
    layers.N.downsample.{conv1,conv2,conv3}.{c,bn}       patch merging (`TinyViTPatchMerging`), N < last stage
    layers.N.blocks.M.attn.{norm,qkv,proj,attention_biases}   `TinyViTAttention`, N >= 1
    layers.N.blocks.M.local_conv.{c,bn}                  depthwise 3x3 conv between attention and MLP
    layers.N.blocks.M.mlp.{norm,fc1,fc2}                 `TinyViTMlp`
    neck.{conv1,layer_norm1,conv2,layer_norm2}           named like `SamVisionNeck` (published: `neck.{0,1,2,3}`)

Adapter targets (the places where Med-SA-style tuners attach in each `TinyViTBlock`):

- `layers.N.blocks.M.attn` (`TinyViTAttention`): called as `attn(hidden_states=windows)` with `windows` of shape
  `(batch_size * num_windows, window_size**2, hidden_size)`, the raw (un-normalised) residual-stream tokens of one
  window each; the module applies its own `norm` first. It returns a tuple `(attn_output, attn_weights)` like SAM's
  vision attention: `attn_output` has the input's shape, `attn_weights` is `None` unless the eager implementation is
  used. Its `qkv` (`nn.Linear(C, 3 * C)`; output laid out per head as `[q | k | v]`) and `proj` (`nn.Linear(C, C)`)
  are plain linears.
- `layers.N.blocks.M.mlp` (`TinyViTMlp`): called on the `(batch_size, height, width, hidden_size)` residual stream;
  it applies its own `norm`, so `fc1` sees the normalised tokens, and returns the update that the block adds.

Block: `x = x + unwindow(attn(window(x)))`, `x = local_conv(x)` (no residual), `x = x + mlp(x)`.

BatchNorm: the stem, MBConv, patch merging and local convolutions carry BatchNorm. With `freeze_batchnorm=True`
(default) `TinyViTVisionEncoder.train()` leaves every BatchNorm in eval mode, so its running statistics neither drift
nor depend on the batch while adapters train, and each Conv+BatchNorm runs as a single fused convolution (gradients
still reach the convolution and BatchNorm affine parameters). Set `freeze_batchnorm=False` to train them as usual.

Attention biases are gathered from `attention_biases` on every forward (never cached), so loaded or updated weights
always take effect.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.sam.modeling_sam import SamLayerNorm, SamVisionEncoderOutput, eager_attention_forward
from transformers.utils.output_capturing import capture_outputs

__all__ = [
    "TinyViTAttention",
    "TinyViTBlock",
    "TinyViTConfig",
    "TinyViTMBConv",
    "TinyViTMlp",
    "TinyViTPreTrainedModel",
    "TinyViTVisionEncoder",
]


@strict
class TinyViTConfig(PreTrainedConfig):
    r"""Configuration of a [`TinyViTVisionEncoder`]; the defaults are LiteMedSAM's image encoder.

    Args:
        image_size (`int`, defaults to 256): Side of the square input image.
        num_channels (`int`, defaults to 3): Input channels.
        embed_dims (`Sequence[int]`, defaults to `(64, 128, 160, 320)`): Width of each stage; stage 0 is MBConv.
        depths (`Sequence[int]`, defaults to `(2, 2, 6, 2)`): Blocks per stage.
        num_heads (`Sequence[int]`, defaults to `(2, 4, 5, 10)`): Attention heads per stage (stage 0 unused).
        window_sizes (`Sequence[int]`, defaults to `(7, 7, 14, 7)`): Attention window side per stage (stage 0
            unused).
        downsample_strides (`Sequence[int]`, defaults to `(2, 2, 1)`): Stride of the patch merging after each stage
            but the last; the output side is `image_size / prod(downsample_strides)`.
        mlp_ratio (`float`, defaults to 4.0): MLP hidden width over the stage width.
        mbconv_expand_ratio (`float`, defaults to 4.0): MBConv hidden width over the stage width.
        local_conv_size (`int`, defaults to 3): Kernel of the depthwise convolution between attention and MLP.
        hidden_act (`str`, defaults to `"gelu"`): Activation everywhere in the encoder.
        output_channels (`int`, defaults to 256): Channels of the neck, i.e. of the image embedding.
        layer_norm_eps (`float`, defaults to 1e-5): Epsilon of the attention and MLP LayerNorms.
        neck_layer_norm_eps (`float`, defaults to 1e-6): Epsilon of the neck's channel LayerNorms.
        batch_norm_eps (`float`, defaults to 1e-5): Epsilon of the BatchNorms.
        freeze_batchnorm (`bool`, defaults to `True`): Keep BatchNorm layers in eval mode under `.train()`.
        num_pos_feats (`int`, defaults to 128): Random Fourier features of SAM's shared positional embedding
            (read by `SamModel`, not by the encoder).
        initializer_range (`float`, defaults to 0.02): Std of the random initialisation of linears and convolutions.
    """

    model_type = "lite_medsam_tiny_vit"
    base_config_key = "vision_config"

    image_size: int = 256
    num_channels: int = 3
    embed_dims: list[int] | tuple[int, ...] = (64, 128, 160, 320)
    depths: list[int] | tuple[int, ...] = (2, 2, 6, 2)
    num_heads: list[int] | tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: list[int] | tuple[int, ...] = (7, 7, 14, 7)
    downsample_strides: list[int] | tuple[int, ...] = (2, 2, 1)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    hidden_act: str = "gelu"
    output_channels: int = 256
    layer_norm_eps: float = 1e-5
    neck_layer_norm_eps: float = 1e-6
    batch_norm_eps: float = 1e-5
    freeze_batchnorm: bool = True
    num_pos_feats: int = 128
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        num_stages = len(self.embed_dims)
        for name in ("depths", "num_heads", "window_sizes"):
            if len(getattr(self, name)) != num_stages:
                raise ValueError(f"`{name}` needs one entry per stage ({num_stages}), got {getattr(self, name)}.")
        if num_stages < 2:
            raise ValueError(f"TinyViT needs an MBConv stage and at least one attention stage, got {num_stages}.")
        if len(self.downsample_strides) != num_stages - 1:
            raise ValueError(
                f"`downsample_strides` needs {num_stages - 1} entries (one per stage but the last), "
                f"got {self.downsample_strides}."
            )
        for stage in range(1, num_stages):
            if self.embed_dims[stage] % self.num_heads[stage]:
                raise ValueError(
                    f"`embed_dims[{stage}]`={self.embed_dims[stage]} is not divisible by "
                    f"`num_heads[{stage}]`={self.num_heads[stage]}."
                )
        # Read by `SamPositionalEmbedding` (random init only; pretrained weights overwrite it).
        self.scale = self.output_channels // 2
        super().__post_init__(**kwargs)

    @property
    def stage_resolutions(self) -> list[int]:
        """Side of the feature map in each stage, then after the last stage (the embedding side)."""
        sides = [self.image_size]
        for stride in self.downsample_strides:
            sides.append((sides[-1] - 1) // stride + 1)  # 3x3 conv, padding 1
        return sides

    @property
    def embedding_size(self) -> int:
        """Side of the output image embedding."""
        return self.stage_resolutions[-1]


class TinyViTConv2dBN(nn.Module):
    """Bias-free `Conv2d` (`c`) followed by `BatchNorm2d` (`bn`); fused into one convolution when BN is in eval mode.

    Input and output: `(batch_size, channels, height, width)`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.c = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.bn.training:
            return self.bn(self.c(hidden_states))
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
        weight = self.c.weight * scale[:, None, None, None]
        bias = self.bn.bias - self.bn.running_mean * scale
        return F.conv2d(hidden_states, weight, bias, self.c.stride, self.c.padding, self.c.dilation, self.c.groups)


class TinyViTPatchEmbed(nn.Module):
    """Stem: 1x1 conv + BN, activation, 1x1 conv + BN (LiteMedSAM keeps full resolution). NCHW in and out."""

    def __init__(self, config: TinyViTConfig) -> None:
        super().__init__()
        hidden, eps = config.embed_dims[0], config.batch_norm_eps
        self.seq = nn.Sequential(
            TinyViTConv2dBN(config.num_channels, hidden // 2, eps=eps),
            ACT2FN[config.hidden_act],
            TinyViTConv2dBN(hidden // 2, hidden, eps=eps),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.seq(pixel_values)


class TinyViTMBConv(GradientCheckpointingLayer):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, activation. NCHW in and out."""

    def __init__(self, config: TinyViTConfig, dim: int) -> None:
        super().__init__()
        hidden = int(dim * config.mbconv_expand_ratio)
        eps = config.batch_norm_eps
        self.conv1 = TinyViTConv2dBN(dim, hidden, eps=eps)
        self.act1 = ACT2FN[config.hidden_act]
        self.conv2 = TinyViTConv2dBN(hidden, hidden, kernel_size=3, groups=hidden, eps=eps)
        self.act2 = ACT2FN[config.hidden_act]
        self.conv3 = TinyViTConv2dBN(hidden, dim, eps=eps)
        self.act3 = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.act1(self.conv1(hidden_states))
        hidden_states = self.act2(self.conv2(hidden_states))
        hidden_states = self.conv3(hidden_states)
        return self.act3(hidden_states + residual)


class TinyViTPatchMerging(nn.Module):
    """1x1 conv, 3x3 depthwise conv with stride, 1x1 conv: `(B, C_in, H, W)` -> `(B, H', W', C_out)` channels-last."""

    def __init__(self, config: TinyViTConfig, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        eps = config.batch_norm_eps
        self.conv1 = TinyViTConv2dBN(dim, out_dim, eps=eps)
        self.conv2 = TinyViTConv2dBN(out_dim, out_dim, kernel_size=3, stride=stride, groups=out_dim, eps=eps)
        self.conv3 = TinyViTConv2dBN(out_dim, out_dim, eps=eps)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.act(self.conv1(hidden_states))
        hidden_states = self.act(self.conv2(hidden_states))
        return self.conv3(hidden_states).permute(0, 2, 3, 1)


def relative_offset_index(window_size: int, device: torch.device | None = None) -> torch.Tensor:
    """`(N, N)` index, `N = window_size**2`, of the bias shared by each pair of window positions.

    Positions `(y1, x1)`, `(y2, x2)` share a bias when `(|y1 - y2|, |x1 - x2|)` is equal; the index is
    `|dy| * window_size + |dx|` (TinyViT's order of first appearance, so published biases load unchanged).
    """
    coords = torch.arange(window_size, device=device)
    ys = coords.repeat_interleave(window_size)
    xs = coords.repeat(window_size)
    return (ys[:, None] - ys[None, :]).abs() * window_size + (xs[:, None] - xs[None, :]).abs()


class TinyViTAttention(nn.Module):
    """Multi-head self-attention inside one window, with a learned bias per head and relative offset.

    Input `hidden_states`: `(batch_size * num_windows, window_size**2, dim)`, not normalised (`norm` is applied here).
    Returns `(attn_output, attn_weights)`: `attn_output` shaped like the input; `attn_weights`
    `(batch_size * num_windows, num_heads, N, N)` with the eager implementation, else `None`. The kernel follows
    `config._attn_implementation` through transformers' attention interface (SDPA by default; the biases go in as its
    float mask, which is exact).
    """

    def __init__(self, config: TinyViTConfig, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.scale = self.head_dim**-0.5
        self.is_causal = False
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))

    def attention_bias(self) -> torch.Tensor:
        """The `(num_heads, N, N)` additive bias, gathered from `attention_biases` (differentiable)."""
        index = relative_offset_index(self.window_size, self.attention_biases.device)
        return self.attention_biases[:, index]

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_len, dim = hidden_states.shape
        if seq_len != self.window_size**2:
            raise ValueError(f"TinyViTAttention expects windows of {self.window_size**2} tokens, got {seq_len}.")
        hidden_states = self.norm(hidden_states)
        # (B, N, heads, [q|k|v], head_dim) -> 3 x (B, heads, N, head_dim)
        qkv = self.qkv(hidden_states).view(batch_size, seq_len, self.num_heads, 3, self.head_dim)
        query, key, value = qkv.permute(3, 0, 2, 1, 4).unbind(0)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask=self.attention_bias().to(query.dtype)[None],  # (1, heads, N, N), added to the logits
            dropout=0.0,
            scaling=self.scale,
            is_causal=False,
            **kwargs,
        )
        return self.proj(attn_output.reshape(batch_size, seq_len, dim)), attn_weights


class TinyViTMlp(nn.Module):
    """`fc2(act(fc1(norm(x))))` on `(..., dim)` tokens; `fc1` sees the normalised tokens."""

    def __init__(self, config: TinyViTConfig, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(dim, int(dim * config.mlp_ratio))
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(int(dim * config.mlp_ratio), dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(hidden_states))))


class TinyViTBlock(GradientCheckpointingLayer):
    """Windowed attention + residual, depthwise local conv, MLP + residual. `(B, H, W, C)` in and out."""

    def __init__(self, config: TinyViTConfig, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = TinyViTAttention(config, dim, num_heads, window_size)
        self.local_conv = TinyViTConv2dBN(
            dim, dim, kernel_size=config.local_conv_size, groups=dim, eps=config.batch_norm_eps
        )
        self.mlp = TinyViTMlp(config, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, height, width, dim = hidden_states.shape
        size = self.window_size
        pad_h, pad_w = (size - height % size) % size, (size - width % size) % size
        # Zero padding enters attention unmasked, as in the original TinyViT.
        windows = F.pad(hidden_states, (0, 0, 0, pad_w, 0, pad_h)) if pad_h or pad_w else hidden_states
        rows, cols = (height + pad_h) // size, (width + pad_w) // size
        windows = windows.reshape(batch_size, rows, size, cols, size, dim).transpose(2, 3)
        attn_output, _ = self.attn(hidden_states=windows.reshape(-1, size * size, dim))
        attn_output = attn_output.view(batch_size, rows, cols, size, size, dim).transpose(2, 3)
        attn_output = attn_output.reshape(batch_size, rows * size, cols * size, dim)[:, :height, :width]
        hidden_states = hidden_states + attn_output
        hidden_states = self.local_conv(hidden_states.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return hidden_states + self.mlp(hidden_states)


class TinyViTStage(nn.Module):
    """`blocks` then optional `downsample` (patch merging). Stage 0 (MBConv) is NCHW, the others `(B, H, W, C)`."""

    def __init__(self, config: TinyViTConfig, stage: int) -> None:
        super().__init__()
        dim = config.embed_dims[stage]
        self.channels_last = stage > 0
        if stage == 0:
            blocks = [TinyViTMBConv(config, dim) for _ in range(config.depths[0])]
        else:
            blocks = [
                TinyViTBlock(config, dim, config.num_heads[stage], config.window_sizes[stage])
                for _ in range(config.depths[stage])
            ]
        self.blocks = nn.ModuleList(blocks)
        self.downsample = None
        if stage < len(config.embed_dims) - 1:
            out_dim = config.embed_dims[stage + 1]
            self.downsample = TinyViTPatchMerging(config, dim, out_dim, config.downsample_strides[stage])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            hidden_states = block(hidden_states)
        if self.downsample is not None:
            if self.channels_last:
                hidden_states = hidden_states.permute(0, 3, 1, 2)
            hidden_states = self.downsample(hidden_states)
        return hidden_states


class TinyViTNeck(nn.Module):
    """SAM's neck: 1x1 conv, channel LayerNorm, 3x3 conv, channel LayerNorm. `(B, H, W, C)` -> `(B, C_out, H, W)`."""

    def __init__(self, config: TinyViTConfig) -> None:
        super().__init__()
        channels, eps = config.output_channels, config.neck_layer_norm_eps
        self.conv1 = nn.Conv2d(config.embed_dims[-1], channels, kernel_size=1, bias=False)
        self.layer_norm1 = SamLayerNorm(channels, eps=eps, data_format="channels_first")
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.layer_norm2 = SamLayerNorm(channels, eps=eps, data_format="channels_first")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.layer_norm1(self.conv1(hidden_states.permute(0, 3, 1, 2)))
        return self.layer_norm2(self.conv2(hidden_states))


class TinyViTPreTrainedModel(PreTrainedModel):
    config_class = TinyViTConfig
    base_model_prefix = "tiny_vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["TinyViTBlock", "TinyViTMBConv"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, TinyViTAttention):
            init.zeros_(module.attention_biases)
        elif isinstance(module, TinyViTMBConv):
            init.zeros_(module.conv3.bn.weight)  # each MBConv starts as the identity (plus activation)


class TinyViTVisionEncoder(TinyViTPreTrainedModel):
    """TinyViT image encoder returning SAM's image embedding; see the module docstring for names and shapes."""

    _can_record_outputs = {"hidden_states": TinyViTBlock, "attentions": TinyViTAttention}

    def __init__(self, config: TinyViTConfig) -> None:
        super().__init__(config)
        self.config = config
        self.patch_embed = TinyViTPatchEmbed(config)
        self.layers = nn.ModuleList([TinyViTStage(config, stage) for stage in range(len(config.embed_dims))])
        self.neck = TinyViTNeck(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.patch_embed

    def train(self, mode: bool = True) -> TinyViTVisionEncoder:
        """Set training mode; with `config.freeze_batchnorm` every BatchNorm stays in eval mode."""
        super().train(mode)
        if mode and self.config.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def check_pixel_values(self, pixel_values: torch.Tensor | None) -> None:
        """Raise a `ValueError` unless `pixel_values` is float `(batch_size, num_channels, image_size, image_size)`."""
        config = self.config
        expected = f"(batch_size, {config.num_channels}, {config.image_size}, {config.image_size})"
        if pixel_values is None:
            raise ValueError(f"You have to specify pixel_values, a float tensor of shape {expected}.")
        if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point():
            got = pixel_values.dtype if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a float tensor of shape {expected}, got {got}.")
        if tuple(pixel_values.shape[1:]) != (config.num_channels, config.image_size, config.image_size):
            raise ValueError(
                f"pixel_values must have shape {expected} (preprocessed: resized and padded to "
                f"{config.image_size}x{config.image_size}), got {tuple(pixel_values.shape)}."
            )

    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor | None = None, **kwargs) -> SamVisionEncoderOutput:
        r"""Encode images.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
                Preprocessed images (LiteMedSAM: RGB min-max scaled to [0, 1], long side resized to 256, padded).

        Returns:
            `SamVisionEncoderOutput` with `last_hidden_state` of shape `(batch_size, output_channels, S, S)`,
            `S = config.embedding_size` (64 for LiteMedSAM). With `output_hidden_states=True`, `hidden_states` holds
            the input of the first `TinyViTBlock` then every `TinyViTBlock` output, each `(batch_size, H, W, C)`;
            with `output_attentions=True` (eager attention only) `attentions` holds each block's attention weights.
        """
        self.check_pixel_values(pixel_values)
        # Channels-last convolutions are faster (depthwise, 1x1) and hand NHWC tokens to the attention stages for free.
        hidden_states = self.patch_embed(pixel_values.contiguous(memory_format=torch.channels_last))
        for stage in self.layers:
            hidden_states = stage(hidden_states)
        return SamVisionEncoderOutput(last_hidden_state=self.neck(hidden_states))
