"""Remote-sensing architectures from the seed's papers, registered beside the image-classification zoo.

Each has a size knob; the defaults are the published sizes (parameter counts in
``tests/test_remote_sensing.py``), a small setting makes zoos of many models practical on a CPU.

- ``dual_simclr``: two ResNet encoders (first conv for 2 Sentinel-1 / 13 Sentinel-2 channels), a
  projection MLP per stream (2048 -> 2048 -> 128 for ResNet-50), optional DFC2020 heads on the
  concatenated features (classification: Linear(2 x feat, 8); segmentation: 1x1 conv on the
  concatenated last feature maps, upsampled to the input size).
- ``dual_swin``: the published transformer variant, two Swin-T encoders (shifted-window attention
  with relative-position bias, patch merging); NT-Xent directly on the pooled 768-d features, no
  projection head; ``dual_vit`` is the same with plain ViT encoders.
- ``multitask_plant``: U-Net backbone on 12 Sentinel-2 bands; plume segmentation (1x1 conv),
  power-generation regression (pooled bottleneck + 4 weather values -> MLP) and fuel-type
  classification (4 classes).
- ``no2_net``: Sentinel-2 ResNet branch + Sentinel-5P conv branch (Conv 1->10 k3, pool 3,
  Conv 10->15 k5, pool 3, Linear -> 128), shared head Dropout -> Linear(f + 128, (f + 128) / 4) -> ReLU
  -> Dropout -> Linear(.., 2) giving (mean, log variance).

All take named inputs (float32 [B, C, H, W] images, [B, 4] weather) and return dicts of outputs.
"""

import torch
import torch.nn.functional as F
from torch import nn

from modelzoo.errors import ZooError
from modelzoo.models.base import TaskModel
from modelzoo.models.registry import register_model
from modelzoo.models.resnet import BasicBlock

RESNET_BLOCKS = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck: 1x1 reduce, 3x3, 1x1 expand (x4), BatchNorm, projection shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, act):
        super().__init__()
        self.act = act
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out))

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        return self.act(self.bn3(self.conv3(out)) + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """ImageNet-style ResNet trunk (7x7/2 conv, 3x3/2 max-pool, 4 stages) without the classifier.

    ``depth`` 10/18/34 use basic blocks, 50 bottlenecks; ``width`` is the first stage's channels
    (64 published). ``stem='small'`` replaces the 7x7/2 conv and max-pool by one 3x3/1 conv (for
    small patches; same parameter count up to the stem kernel). ``forward`` returns the last
    feature map [B, feat, H/32, W/32] (H/8 with the small stem); ``out_features`` = 8 x width
    (basic) or 32 x width (bottleneck).
    """

    def __init__(self, in_channels: int, depth: int = 50, width: int = 64, act=F.relu,
                 stem: str = "imagenet"):
        super().__init__()
        if depth not in RESNET_BLOCKS:
            raise ZooError(f"ResNet depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}")
        block = Bottleneck if depth == 50 else BasicBlock
        expansion = getattr(block, "expansion", 1)
        if stem not in ("imagenet", "small"):
            raise ZooError(f"ResNet stem must be imagenet or small, got {stem!r}")
        self.act, self.small_stem = act, stem == "small"
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False) if self.small_stem \
            else nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, in_planes = [], width
        for i, blocks in enumerate(RESNET_BLOCKS[depth]):
            planes = width * 2 ** i
            layers = []
            for j in range(blocks):
                layers.append(block(in_planes, planes, 2 if (i > 0 and j == 0) else 1, act))
                in_planes = planes * expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.out_features = in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        if not self.small_stem:
            x = F.max_pool2d(x, 3, stride=2, padding=1)
        return self.stages(x)


class RemoteSensingModel(TaskModel):
    """Base: zoo construction arguments plus Kaiming-uniform convs unless ``init`` says otherwise.

    ``dropout`` is plain (not keyed) dropout: these models train one at a time, and MC-dropout
    prediction (``objectives.mc_dropout_predict``) needs it active at test time.
    """


def _projection(features: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, out))


@register_model("dual_simclr")
class DualSimCLR(RemoteSensingModel):
    """Dual-SimCLR: S1 and S2 ResNet encoders, projections, optional DFC2020 head.

    ``head``: 'none' (pre-training), 'classification' (Linear(2 x feat, num_classes) on the
    concatenated pooled features) or 'segmentation' (per-pixel logits [B, num_classes, H, W]).
    Outputs: 'h1', 'h2' pooled features [B, feat]; 'z1', 'z2' projections [B, proj_dim];
    'logits' for the head.
    """

    def __init__(self, s1_channels=2, s2_channels=13, depth=50, width=64, proj_hidden=None,
                 proj_dim=128, head="none", num_classes=8, stem="imagenet", activation="relu",
                 dropout=0.0, init="kaiming_uniform", bias_init=0.0):
        super().__init__(activation, dropout, init, bias_init)
        if head not in ("none", "classification", "segmentation"):
            raise ZooError(f"dual_simclr head must be none, classification or segmentation, "
                           f"got {head!r}")
        self.head = head
        self.enc1 = ResNetEncoder(s1_channels, depth, width, self.act, stem)
        self.enc2 = ResNetEncoder(s2_channels, depth, width, self.act, stem)
        feat = self.enc1.out_features
        self.proj1 = _projection(feat, proj_hidden or feat, proj_dim)
        self.proj2 = _projection(feat, proj_hidden or feat, proj_dim)
        self.drop1 = nn.Dropout(dropout)
        if head == "classification":
            self.classifier = nn.Linear(2 * feat, num_classes)
        elif head == "segmentation":
            self.classifier = nn.Conv2d(2 * feat, num_classes, 1)
        self.reset_parameters()

    def features(self, s1, s2):
        return self.enc1(s1), self.enc2(s2)

    def forward(self, s1, s2):
        m1, m2 = self.features(s1, s2)
        h1, h2 = m1.mean(dim=(2, 3)), m2.mean(dim=(2, 3))
        out = {"h1": h1, "h2": h2, "z1": self.proj1(h1), "z2": self.proj2(h2)}
        if self.head == "classification":
            out["logits"] = self.classifier(self.drop1(torch.cat([h1, h2], dim=1)))
        elif self.head == "segmentation":
            logits = self.classifier(self.drop1(torch.cat([m1, m2], dim=1)))
            out["logits"] = F.interpolate(logits, size=s1.shape[-2:], mode="bilinear",
                                          align_corners=False)
        return out


class ViTEncoder(nn.Module):
    """Patch embedding + learned positions + pre-norm transformer layers; mean-pooled [B, dim]."""

    def __init__(self, in_channels: int, image_size: int, patch: int, dim: int, depth: int,
                 heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        if image_size % patch:
            raise ZooError(f"image_size {image_size} is not a multiple of patch {patch}")
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_ratio * dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The final normalised tokens [B, N, dim], as the one level of this trunk."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        return [self.norm(self.blocks(tokens))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.levels(x)[-1].mean(dim=1)


class DualTransformer(RemoteSensingModel):
    """Two transformer trunks (``enc1`` S1, ``enc2`` S2, each with ``levels``); NT-Xent directly on
    the mean-pooled final tokens. Outputs 'h1', 'h2' [B, feat] (also as 'z1', 'z2') and 'logits':
    ``classifier`` on the concatenated features, or for segmentation ``classifier`` on the two
    decoders' (``dec1``, ``dec2``) concatenated per-pixel maps."""

    def forward(self, s1, s2):
        levels1, levels2 = self.enc1.levels(s1), self.enc2.levels(s2)
        h1, h2 = levels1[-1].mean(dim=1), levels2[-1].mean(dim=1)
        out = {"h1": h1, "h2": h2, "z1": h1, "z2": h2}
        if self.head == "classification":
            out["logits"] = self.classifier(torch.cat([h1, h2], dim=1))
        elif self.head == "segmentation":
            out["logits"] = self.classifier(torch.cat([self.dec1(levels1), self.dec2(levels2)], 1))
        return out


@register_model("dual_vit")
class DualViT(DualTransformer):
    """Transformer Dual-SSL: two ViT encoders, NT-Xent on the pooled features (no projection head).

    Outputs 'h1', 'h2' [B, dim] (also as 'z1', 'z2') and 'logits' with ``head='classification'``
    (Linear(2 x dim, num_classes)). ViT-S/16-like published-scale setting: dim 384, depth 12, heads 6.
    """

    def __init__(self, s1_channels=2, s2_channels=13, image_size=224, patch=16, dim=384, depth=12,
                 heads=6, head="none", num_classes=8, activation="gelu", dropout=0.0,
                 init="uniform", bias_init=0.0):
        super().__init__(activation, dropout, init, bias_init)
        if head not in ("none", "classification"):
            raise ZooError(f"dual_vit head must be none or classification, got {head!r}")
        self.head = head
        self.enc1 = ViTEncoder(s1_channels, image_size, patch, dim, depth, heads, dropout=dropout)
        self.enc2 = ViTEncoder(s2_channels, image_size, patch, dim, depth, heads, dropout=dropout)
        if head == "classification":
            self.classifier = nn.Linear(2 * dim, num_classes)
        with torch.no_grad():  # Glorot / constant init of the linear layers, positions kept
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        nn.init.constant_(module.bias, bias_init)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> windows [B * H/w * W/w, w * w, C] (batch-major)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, b: int, h: int, w: int) -> torch.Tensor:
    """The inverse of ``window_partition``: -> [B, H, W, C]."""
    x = windows.view(b, h // window, w // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        grid = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                          indexing="ij")).flatten(1)
        rel = (grid[:, :, None] - grid[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1],
                             persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B * windows, N, C]; mask [windows, N, N] additive (shifted windows) or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # [1, heads, N, N]
        if mask is not None:
            bias = (bias + mask[:, None]).repeat(bw // len(mask), 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """Pre-norm Swin block: (shifted-)window attention and a 4x MLP, both residual."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, resolution: int):
        super().__init__()
        if resolution <= window:  # one window covers the map: no shift
            window, shift = resolution, 0
        self.window, self.shift, self.resolution = window, shift, resolution
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        mask = None
        if shift:
            region = torch.zeros(1, resolution, resolution, 1)
            bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
            for i, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
                region[:, rows, cols] = i
            ids = window_partition(region, window).squeeze(-1)  # [windows, N]
            mask = (ids[:, None, :] != ids[:, :, None]).float() * -100.0
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        side = self.resolution
        h = self.norm1(x).view(b, side, side, c)
        if self.shift:
            h = torch.roll(h, (-self.shift, -self.shift), (1, 2))
        h = window_reverse(self.attn(window_partition(h, self.window), self.attn_mask),
                           self.window, b, side, side)
        if self.shift:
            h = torch.roll(h, (self.shift, self.shift), (1, 2))
        x = x + h.reshape(b, length, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated, normalised and projected: [B, HW, C] -> [B, HW/4, 2C]."""

    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, self.resolution, self.resolution, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


def swin_stages(dim: int, side: int, depths, heads, window: int) -> nn.ModuleList:
    """One ``nn.Sequential`` of Swin blocks per level, halving the side and doubling dim."""
    stages = []
    for i, (depth, head_count) in enumerate(zip(depths, heads)):
        if side > window and side % window:
            raise ZooError(f"swin: level {i} resolution {side} is not a multiple of window {window}")
        stages.append(nn.Sequential(*[SwinBlock(dim, head_count, window,
                                                window // 2 if j % 2 else 0, side)
                                      for j in range(depth)]))
        side, dim = side // 2, dim * 2
    return nn.ModuleList(stages)


class SwinEncoder(nn.Module):
    """Swin transformer trunk; Swin-T by default (embed 96, depths 2,2,6,2, heads 3,6,12,24,
    window 7, patch 4, 224x224). ``forward`` returns the mean-pooled final tokens
    [B, 2^(levels-1) x embed_dim]; ``levels`` the token maps of every level (the last normalised)."""

    def __init__(self, in_channels: int, image_size: int = 224, patch: int = 4,
                 embed_dim: int = 96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), window: int = 7):
        super().__init__()
        if len(depths) != len(heads):
            raise ZooError(f"swin: depths {list(depths)} and heads {list(heads)} differ in length")
        side = image_size // patch
        if image_size % patch or side % 2 ** (len(depths) - 1):
            raise ZooError(f"swin: image_size {image_size} / patch {patch} must halve "
                           f"{len(depths) - 1} times")
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch, stride=patch)
        self.patch_norm = nn.LayerNorm(embed_dim)
        self.stages = swin_stages(embed_dim, side, depths, heads, window)
        self.merges = nn.ModuleList(PatchMerging(embed_dim * 2 ** i, side // 2 ** i)
                                    for i in range(len(depths) - 1))
        self.out_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.out_features)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_norm(self.patch_embed(x).flatten(2).transpose(1, 2))
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            out.append(x)
            if i < len(self.merges):
                x = self.merges[i](x)
        out[-1] = self.norm(out[-1])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.levels(x)[-1].mean(dim=1)


class PatchExpand(nn.Module):
    """Swin-UNet up-sampling: Linear(C, scale^2 x C / shrink), tokens rearranged to a map
    ``scale`` times larger with C / shrink channels, LayerNorm. [B, HW, C] -> [B, s^2 HW, C/shrink]."""

    def __init__(self, dim: int, resolution: int, scale: int = 2, shrink: int = 2):
        super().__init__()
        self.resolution, self.scale, self.out = resolution, scale, dim // shrink
        self.expand = nn.Linear(dim, scale * scale * self.out, bias=False)
        self.norm = nn.LayerNorm(self.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, side, s = len(x), self.resolution, self.scale
        x = self.expand(x).view(b, side, side, s, s, self.out).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(b, side * s * side * s, self.out))


class SwinUNetDecoder(nn.Module):
    """Swin-UNet style decoder of one stream: from the deepest level, patch-expand, concatenate
    the encoder's skip, project, Swin blocks; finally expand by the patch size to a per-pixel map
    [B, embed_dim, H, W]."""

    def __init__(self, image_size: int, patch: int, embed_dim: int, depths, heads, window: int):
        super().__init__()
        side = image_size // patch
        levels = len(depths)
        self.ups, self.fuse, self.stages = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(levels - 1)):
            dim, res = embed_dim * 2 ** level, side // 2 ** level
            self.ups.append(PatchExpand(2 * dim, res // 2))
            self.fuse.append(nn.Linear(2 * dim, dim))
            self.stages.append(swin_stages(dim, res, depths[level:level + 1],
                                           heads[level:level + 1], window)[0])
        self.final = PatchExpand(embed_dim, side, scale=patch, shrink=1)
        self.side, self.patch = side, patch

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        x = levels[-1]
        for up, fuse, stage, skip in zip(self.ups, self.fuse, self.stages, reversed(levels[:-1])):
            x = stage(fuse(torch.cat([up(x), skip], dim=-1)))
        x = self.final(x)
        size = self.side * self.patch
        return x.view(len(x), size, size, -1).permute(0, 3, 1, 2)


@register_model("dual_swin")
class DualSwin(DualTransformer):
    """The published transformer Dual-SSL (CVPR EarthVision 2022): two Swin-T encoders (S1 2 and
    S2 13 channels), NT-Xent on the pooled 768-d features (no projection head); with
    ``head='classification'`` Linear(1536, num_classes) on the concatenated features;
    ``head='segmentation'`` a Swin-UNet decoder per stream and a 1x1 conv on the concatenated
    per-pixel features -> logits [B, num_classes, H, W].
    Outputs as ``DualTransformer``. Small setting e.g. image_size 32, patch 2, embed_dim 16,
    depths [1, 1], heads [1, 2], window 4."""

    def __init__(self, s1_channels=2, s2_channels=13, image_size=224, patch=4, embed_dim=96,
                 depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), window=7, head="none",
                 num_classes=8, activation="gelu", dropout=0.0, init="uniform", bias_init=0.0):
        super().__init__(activation, dropout, init, bias_init)
        if head not in ("none", "classification", "segmentation"):
            raise ZooError(f"dual_swin head must be none, classification or segmentation, "
                           f"got {head!r}")
        self.head = head
        args = (image_size, patch, embed_dim, tuple(depths), tuple(heads), window)
        self.enc1 = SwinEncoder(s1_channels, *args)
        self.enc2 = SwinEncoder(s2_channels, *args)
        if head == "classification":
            self.classifier = nn.Linear(2 * self.enc1.out_features, num_classes)
        elif head == "segmentation":  # a Swin-UNet decoder per stream, fused per pixel
            self.dec1 = SwinUNetDecoder(*args)
            self.dec2 = SwinUNetDecoder(*args)
            self.classifier = nn.Conv2d(2 * embed_dim, num_classes, 1)
        with torch.no_grad():  # truncated-normal linear layers, zero biases, as Swin does
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.trunc_normal_(module.weight, std=0.02)
                    if module.bias is not None:
                        nn.init.constant_(module.bias, bias_init)


def _double_conv(cin: int, cout: int, act) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         act(), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), act())


ACT_MODULES = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
               "leakyrelu": nn.LeakyReLU, "silu": nn.SiLU}


@register_model("multitask_plant")
class MultitaskPlant(RemoteSensingModel):
    """Power-plant multitask model: U-Net (``levels`` down-steps, first width ``width``) + 3 heads.

    Published: 12 bands, 120x120, width 64, 4 levels. Inputs ``image`` [B, 12, H, W] (H, W divisible
    by 2**levels) and ``weather`` [B, 4]. Outputs 'segmentation' plume logits [B, 1, H, W],
    'generation' [B] (regression), 'fuel' logits [B, fuel_classes].
    """

    def __init__(self, in_channels=12, width=64, levels=4, weather_features=4, fuel_classes=4,
                 regression_hidden=128, activation="relu", dropout=0.0, init="kaiming_uniform",
                 bias_init=0.0):
        super().__init__(activation, dropout, init, bias_init)
        act = ACT_MODULES[activation]
        widths = [width * 2 ** i for i in range(levels + 1)]
        self.down = nn.ModuleList([_double_conv(in_channels, widths[0], act)] +
                                  [_double_conv(widths[i], widths[i + 1], act)
                                   for i in range(levels)])
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(levels)))
        self.decode = nn.ModuleList(_double_conv(2 * widths[i], widths[i], act)
                                    for i in reversed(range(levels)))
        self.segment = nn.Conv2d(widths[0], 1, 1)
        self.regress = nn.Sequential(nn.Dropout(dropout),
                                     nn.Linear(widths[-1] + weather_features, regression_hidden),
                                     act(), nn.Linear(regression_hidden, 1))
        self.classify = nn.Sequential(nn.Dropout(dropout), nn.Linear(widths[-1], fuel_classes))
        self.levels = levels
        self.reset_parameters()

    def forward(self, image, weather):
        skips, x = [], image
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        pooled = x.mean(dim=(2, 3))
        for up, decode, skip in zip(self.up, self.decode, reversed(skips[:-1])):
            x = decode(torch.cat([up(x), skip], dim=1))
        return {"segmentation": self.segment(x),
                "generation": self.regress(torch.cat([pooled, weather], dim=1)).squeeze(1),
                "fuel": self.classify(pooled)}


@register_model("no2_net")
class NO2Net(RemoteSensingModel):
    """NO2 model: S2 ResNet branch + S5P conv branch -> shared head -> (mean, log variance).

    Inputs ``s2`` [B, 12, H, W] and ``s5p`` [B, 1, s5p_size, s5p_size] (120 published).
    Outputs 'mean' [B] and 'log_var' [B].
    """

    def __init__(self, s2_channels=12, depth=50, width=64, s5p_size=120, s5p_features=128,
                 stem="imagenet", activation="relu", dropout=0.5, init="kaiming_uniform",
                 bias_init=0.0):
        super().__init__(activation, dropout, init, bias_init)
        self.s2 = ResNetEncoder(s2_channels, depth, width, self.act, stem)
        self.s5p_conv1 = nn.Conv2d(1, 10, 3)
        self.s5p_conv2 = nn.Conv2d(10, 15, 5)
        side = ((s5p_size - 2) // 3 - 4) // 3
        if side < 1:
            raise ZooError(f"no2_net: s5p_size {s5p_size} is too small (at least 21)")
        self.s5p_fc = nn.Linear(15 * side * side, s5p_features)
        fused = self.s2.out_features + s5p_features
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(fused, fused // 4), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(fused // 4, 2))
        self.reset_parameters()

    def forward(self, s2, s5p):
        f2 = self.s2(s2).mean(dim=(2, 3))
        x = F.max_pool2d(self.act(self.s5p_conv1(s5p)), 3)
        x = F.max_pool2d(self.act(self.s5p_conv2(x)), 3)
        f5 = self.act(self.s5p_fc(x.flatten(1)))
        out = self.head(torch.cat([f2, f5], dim=1))
        return {"mean": out[:, 0], "log_var": out[:, 1]}
