"""Official LLaVA-SP checkpoints -> our HF format.

The official code (a LLaVA-1.5 fork) keeps the SP modules directly on the inner model, so its keys look like
`model.conv_4.weight` (crop SFE), `model.conv_4.1.weight` (pool SFE: index 1 because of the pool in a Sequential),
`model.conv_CM.weight` (DFI conv), `model.{query,key,value}_projector.{0,1}.*` (DFI LayerNorm + Linear),
`model.conv_linear.1.*` (GELU, Linear) and `model.mm_projector.{0,2}.*` (the patch MLP). LoRA checkpoints prefix
all of them with `base_model.model.`. The variant is not stored anywhere, so it is detected from the key names
and shapes.

Command line (one whole official checkpoint -> one model directory loadable with sp_core.loading.load_llava_sp):

    llava-sp-convert checkpoint=./llava-sp-cropping-lora base_llm=lmsys/vicuna-7b-v1.5 \
        vision_tower=openai/clip-vit-large-patch14-336 out=./llava-sp-cropping-hf
    llava-sp-convert checkpoint=./llava-sp-pooling-full out=./llava-sp-pooling-hf   # a full (non-LoRA) output
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig

from sp_core.config import LlavaSPConfig, LlavaSPConfigError
from sp_core.official_checkpoint import (
    FULL_WEIGHT_FILES,
    assemble_full_model,
    assemble_model,
    full_weights_file,
    read_full_checkpoint,
    read_state_dict,
    split_full_checkpoint,
)
from sp_core.projector import LlavaSPProjector

logger = logging.getLogger(__name__)

_SFE_CONV_KEY = re.compile(r"^conv_(\d+)(\.1)?\.weight$")
_DFI_KEYS = ("conv_CM.weight",) + tuple(
    f"{role}_projector.{index}.{kind}" for role in ("query", "key", "value") for index in (0, 1)
    for kind in ("weight", "bias")
)
OFFICIAL_PATCH_SIZE = 14  # CLIP-ViT-L/14; the state dict does not record it
# The projector files of a LoRA stage-2 output and of a stage-1 output, in the order they are looked for.
PROJECTOR_FILES = ("non_lora_trainables.bin", "non_lora_trainables.safetensors", "model.bin", "mm_projector.bin")


class OfficialCheckpointError(ValueError):
    """An official state dict that does not match any official LLaVA-SP projector."""


@dataclass(frozen=True)
class OfficialVariant:
    """What the key names and shapes of an official projector say about it."""

    sp_variant: str  # none | cropping | pooling
    sp_num_tokens: int
    sp_dfi: bool
    sp_dfi_kernel: int
    grid_size: int
    vision_width: int
    spatial_channels: int
    text_width: int
    sp_projector_bias: bool
    patch_mlp_bias: bool

    def config(self, **overrides) -> LlavaSPConfig:
        """A LlavaSPConfig with these sizes (default LLaMA/CLIP sub-configs resized; no weights are built)."""
        vision = overrides.pop("vision_config", None) or CLIPVisionConfig(
            hidden_size=self.vision_width,
            num_attention_heads=_heads_for(self.vision_width, preferred=16),
            image_size=self.grid_size * OFFICIAL_PATCH_SIZE,
            patch_size=OFFICIAL_PATCH_SIZE,
        )
        text = overrides.pop("text_config", None) or LlamaConfig(
            hidden_size=self.text_width, num_attention_heads=_heads_for(self.text_width, preferred=32)
        )
        options = dict(
            sp_variant=self.sp_variant,
            sp_num_tokens=self.sp_num_tokens if self.sp_variant != "none" else 6,
            sp_dfi=self.sp_dfi,
            sp_dfi_kernel=self.sp_dfi_kernel,
            sp_channels=self.spatial_channels,
            sp_projector_bias=self.sp_projector_bias,
            multimodal_projector_bias=self.patch_mlp_bias,
        )
        options.update(overrides)
        return LlavaSPConfig(vision_config=vision, text_config=text, **options)


def _heads_for(width: int, preferred: int) -> int:
    """A head count that divides width, for stand-in towers whose only job is to carry the widths."""
    return next(heads for heads in (preferred, 16, 8, 4, 2, 1) if width % heads == 0)


def strip_official_prefix(key: str) -> str:
    """`base_model.model.model.conv_4.weight` / `model.conv_4.weight` / `conv_4.weight` -> `conv_4.weight`."""
    for prefix in ("base_model.model.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def detect_official_variant(state_dict: dict[str, torch.Tensor]) -> OfficialVariant:
    """Which official projector these (prefix-stripped) keys belong to."""
    keys = set(state_dict)
    for required in ("mm_projector.0.weight", "mm_projector.2.weight"):
        if required not in keys:
            raise OfficialCheckpointError(f"missing key {required!r}: every official projector has the patch MLP")
    text_width, vision_width = state_dict["mm_projector.0.weight"].shape
    patch_mlp_bias = "mm_projector.0.bias" in keys

    sfe_convs = {key: _SFE_CONV_KEY.match(key) for key in keys}
    sfe_convs = {key: match for key, match in sfe_convs.items() if match}
    if not sfe_convs:
        return OfficialVariant("none", 0, False, 16, 24, vision_width, vision_width // 2, text_width, False,
                               patch_mlp_bias)

    convs = {key: (int(match.group(1)), bool(match.group(2))) for key, match in sfe_convs.items()}
    smallest = min(side for side, _ in convs.values())
    grid = _grid_side(convs)
    # Scales grow in equal steps from the smallest side up to the grid; a conv off that schedule (conv_99) is left
    # for the caller to name as an unexpected key, and a gap in it as a missing key.
    num_tokens = grid // smallest if grid % smallest == 0 else len(convs)
    scheduled = {key: value for key, value in convs.items() if value[0] <= grid and value[0] % smallest == 0}
    pooled = sorted(side for side, is_pooled in scheduled.values() if is_pooled)
    cropped_below_grid = sorted(side for side, is_pooled in scheduled.values() if not is_pooled and side < grid)
    if pooled and cropped_below_grid:
        raise OfficialCheckpointError(
            f"SFE convs mix pooled keys (conv_k.1.weight for k={pooled}) and crop keys (conv_k.weight for "
            f"k={cropped_below_grid}); an official projector has one kind"
        )
    variant = "pooling" if pooled else "cropping"
    if f"conv_{grid}.weight" not in keys:
        raise OfficialCheckpointError(f"missing key 'conv_{grid}.weight': the conv over the whole {grid}x{grid} grid")
    any_conv = state_dict[next(iter(scheduled))]
    spatial_channels, conv_in = any_conv.shape[0], any_conv.shape[1]
    if conv_in != vision_width:
        raise OfficialCheckpointError(
            f"SFE convs read {conv_in} channels but mm_projector.0.weight reads {vision_width}"
        )

    has_dfi = any(key in keys for key in _DFI_KEYS)
    dfi_kernel = state_dict["conv_CM.weight"].shape[-1] if "conv_CM.weight" in keys else 16
    if "conv_linear.1.weight" not in keys:
        raise OfficialCheckpointError("missing key 'conv_linear.1.weight': the spatial MLP (GELU, Linear)")
    return OfficialVariant(
        sp_variant=variant,
        sp_num_tokens=num_tokens,
        sp_dfi=has_dfi,
        sp_dfi_kernel=int(dfi_kernel),
        grid_size=grid,
        vision_width=int(vision_width),
        spatial_channels=int(spatial_channels),
        text_width=int(text_width),
        sp_projector_bias="conv_linear.1.bias" in keys,
        patch_mlp_bias=patch_mlp_bias,
    )


def _grid_side(convs: dict[str, tuple[int, bool]]) -> int:
    """The side of the conv over the whole grid: among the un-pooled convs (the whole-grid conv has no pool), the
    side whose schedule of equal steps from the smallest side explains the most SFE keys (the smaller on a tie)."""
    smallest = min(side for side, _ in convs.values())
    candidates = sorted({side for side, pooled in convs.values() if not pooled})
    if not candidates:
        largest = max(side for side, _ in convs.values())
        raise OfficialCheckpointError(f"missing key 'conv_{largest}.weight': the conv over the whole grid (no pool)")

    def explained(grid: int) -> int:
        return sum(1 for side, _ in convs.values() if side <= grid and side % smallest == 0)

    return max(candidates, key=lambda grid: (explained(grid), -grid))


def official_key(our_key: str, variant: OfficialVariant, view_sides: list[int]) -> str:
    """The official name of one of our projector's parameters."""
    renames = (
        (r"^linear_1\.", "mm_projector.0."),
        (r"^linear_2\.", "mm_projector.2."),
        (r"^detail_integrator\.detail_conv\.", "conv_CM."),
        (r"^detail_integrator\.", ""),
        (r"^spatial_projector\.", "conv_linear."),
    )
    match = re.match(r"^spatial_extractor\.convs\.(\d+)\.weight$", our_key)
    if match:
        side = view_sides[int(match.group(1))]
        pooled = variant.sp_variant == "pooling" and side < variant.grid_size
        return f"conv_{side}.1.weight" if pooled else f"conv_{side}.weight"
    for pattern, replacement in renames:
        if re.match(pattern, our_key):
            return re.sub(pattern, replacement, our_key, count=1)
    raise OfficialCheckpointError(f"no official name for our projector parameter {our_key!r}")


def projector_from_official(state_dict: dict[str, torch.Tensor]) -> LlavaSPProjector:
    """Our projector, loaded with an official projector state dict (any official variant, with or without the
    `base_model.model.` prefix of LoRA checkpoints). Every key must be used, and every parameter filled."""
    stripped: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        name = strip_official_prefix(key)
        if name in stripped:
            raise OfficialCheckpointError(f"key {key!r} appears twice once prefixes are removed")
        stripped[name] = tensor
    variant = detect_official_variant(stripped)
    try:
        config = variant.config()
    except LlavaSPConfigError as error:
        raise OfficialCheckpointError(f"the key shapes describe no possible LLaVA-SP projector: {error}") from error
    view_sides = [height for height, _ in config.spatial_schedule.view_sizes]
    with torch.device("meta"):
        projector = LlavaSPProjector(config)

    expected = {official_key(ours, variant, view_sides): ours for ours in projector.state_dict()}
    unexpected = sorted(set(stripped) - set(expected))
    if unexpected:
        raise OfficialCheckpointError(
            f"unexpected key {unexpected[0]!r} for a {describe(variant)} projector"
            + (f" (and {len(unexpected) - 1} more: {unexpected[1:4]})" if len(unexpected) > 1 else "")
        )
    missing = sorted(set(expected) - set(stripped))
    if missing:
        raise OfficialCheckpointError(
            f"missing key {missing[0]!r} for a {describe(variant)} projector"
            + (f" (and {len(missing) - 1} more: {missing[1:4]})" if len(missing) > 1 else "")
        )
    ours_state = {}
    meta_state = projector.state_dict()
    for name, ours in expected.items():
        tensor = stripped[name]
        if tuple(tensor.shape) != tuple(meta_state[ours].shape):
            raise OfficialCheckpointError(
                f"key {name!r} has shape {tuple(tensor.shape)}, expected {tuple(meta_state[ours].shape)} for a "
                f"{describe(variant)} projector"
            )
        ours_state[ours] = tensor.float()
    projector.load_state_dict(ours_state, strict=True, assign=True)
    return projector.eval()


def describe(variant: OfficialVariant) -> str:
    if variant.sp_variant == "none":
        return "LLaVA-1.5 (no SP)"
    dfi = f"+DFI(kernel {variant.sp_dfi_kernel})" if variant.sp_dfi else "without DFI"
    tokens = "1 token" if variant.sp_num_tokens == 1 else f"{variant.sp_num_tokens} tokens"
    return f"{variant.sp_variant} SFE ({tokens}) {dfi}"


# ---- whole checkpoints ----------------------------------------------------------------------------------------------


def _first_existing(directory: Path, names: tuple[str, ...]) -> Path | None:
    return next((directory / name for name in names if (directory / name).is_file()), None)


def _is_projector_key(key: str) -> bool:
    name = strip_official_prefix(key)
    return name.startswith(("mm_projector.", "conv_linear.")) or bool(_SFE_CONV_KEY.match(name)) or name in _DFI_KEYS


def _official_config(checkpoint: Path) -> dict:
    config_file = checkpoint / "config.json" if checkpoint.is_dir() else None
    return json.loads(config_file.read_text()) if config_file is not None and config_file.is_file() else {}


def _projector_of(state: dict[str, torch.Tensor], source: Path) -> tuple[LlavaSPProjector, OfficialVariant]:
    """Our projector and the detected variant; an error names the file as well as the key."""
    try:
        projector = projector_from_official(state)
    except OfficialCheckpointError as error:
        raise OfficialCheckpointError(f"{source}: {error}") from error
    return projector, detect_official_variant({strip_official_prefix(k): v for k, v in state.items()})


def convert_official_checkpoint(
    checkpoint: Path,
    base_llm: str | None,
    vision_tower: str | None,
    out: Path,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """An official checkpoint directory -> one HF model directory, in either official layout:

    - full (LlavaLlamaForCausalLM's save_pretrained: the LLM, the projector and usually the CLIP tower): base_llm
      must be None, the language model and tokenizer are the checkpoint's own; vision_tower defaults to the
      config's mm_vision_tower and gives the tower's config and image processor (and its weights only when the
      checkpoint has none);
    - LoRA / projector only (non_lora_trainables.bin, model.bin or mm_projector.bin, with adapter_* for LoRA):
      base_llm and vision_tower give the LLM and the tower; a LoRA adapter is merged as the official loader does.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    official_config = _official_config(checkpoint)
    vision_tower = vision_tower or official_config.get("mm_vision_tower")
    if not vision_tower:
        raise ValueError(f"{checkpoint}: its config.json names no mm_vision_tower; pass vision_tower=...")
    if checkpoint.is_dir() and full_weights_file(checkpoint) is not None:
        if base_llm is not None:
            raise ValueError(
                f"{checkpoint} is a full checkpoint ({full_weights_file(checkpoint).name}): it carries its own "
                "language model and tokenizer, so base_llm= must not be given"
            )
        projector_state, language_model_state, vision_state = split_full_checkpoint(
            read_full_checkpoint(checkpoint), _is_projector_key)
        projector, variant = _projector_of(projector_state, checkpoint)
        return assemble_full_model(variant, projector, language_model_state, vision_state, checkpoint, vision_tower,
                                   official_config, Path(out), dtype)

    projector_file = _first_existing(checkpoint, PROJECTOR_FILES) if checkpoint.is_dir() else checkpoint
    if projector_file is None:
        raise FileNotFoundError(
            f"{checkpoint}: neither a full checkpoint ({', '.join(FULL_WEIGHT_FILES)}) nor the projector files of "
            f"a LoRA or stage-1 output ({', '.join(PROJECTOR_FILES)})"
        )
    if base_llm is None:
        raise ValueError(f"{checkpoint} holds only the projector ({projector_file.name}): pass base_llm=..., the LLM "
                         "it was trained on")
    trainables = read_state_dict(projector_file)
    others = sorted(key for key in trainables if not _is_projector_key(key))
    if others:
        raise OfficialCheckpointError(
            f"{projector_file}: {len(others)} key(s) are not projector or LLaVA-SP weights, which is all this file "
            f"holds in an official checkpoint: {', '.join(others[:6])}"
        )
    projector, variant = _projector_of(trainables, projector_file)
    adapter_dir = checkpoint if checkpoint.is_dir() and (checkpoint / "adapter_config.json").is_file() else None
    return assemble_model(
        variant=variant,
        projector=projector,
        base_llm=base_llm,
        vision_tower=vision_tower,
        adapter_dir=adapter_dir,
        official_config=official_config,
        out=Path(out),
        dtype=dtype,
    )
