"""Build the stage-1 starting model of LLaVA-SP (or the LLaVA-1.5 baseline) from a base LLM and a vision tower.

LLaVA-1.5 starts stage 1 from released weights for everything but the projector: the LLM (Vicuna-7B-v1.5) and the
vision tower (CLIP-ViT-L/14-336) are loaded as they are and stay frozen; the projector (the mlp2x_gelu patch MLP and,
for LLaVA-SP, the SFE/DFI modules) is new. This writes that model as one safetensors directory, with tokenizer,
processor and generation config, which sp_core.loading.load_llava_sp, jobs/preprocess.py and jobs/pretrain.py open:

    llava-sp-init base_llm=lmsys/vicuna-7b-v1.5 vision_tower=openai/clip-vit-large-patch14-336 \
        out=/shared/llava-sp/models/init-sp-cropping sp_variant=cropping sp_dfi=true sp_dfi_kernel=16
    llava-sp-init --help    (the command line: pipelines/commands/init_model.py)

What differs from the sources:
- tokenizer: "<image>" is added as a special token (the official code splices at the sentinel id -200 instead;
  transformers' Llava needs a real id), and pad = unk, as LLaVA sets it for Vicuna;
- LLM: the input embeddings and lm_head gain one row per added token, started at the mean of the old rows
  (resize_token_embeddings(mean_resizing=True), like LLaVA's smart_tokenizer_and_embedding_resize); every old row
  and every other weight is the source's, bit for bit (in the source dtype; dtype= converts);
- projector: initialised by the model's own _init_weights (LlavaSPPreTrainedModel) from `seed`;
- processor: the vision tower's image processor (its preprocessor_config.json, else CLIP's or SigLIP's defaults),
  with <image> expanded to the model's image_tokens_per_image placeholders (576, or 582 with 6 spatial tokens);
- vision features: the penultimate layer, CLIP's CLS token dropped; a SigLIP tower has none, so all its patches
  are kept (vision_feature_select_strategy "full");
- generation config: default_generation_config (greedy, <image> never generated).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import AddedToken
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BaseImageProcessor,
    PreTrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
from transformers.utils import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    is_sentencepiece_available,
)
from transformers.utils.hub import has_file

from sp_core.checkpoint_check import (
    NON_VISION_PARTS,
    load_exactly,
)
from sp_core.config import (
    SP_OPTION_NAMES,
    VISION_TOWERS_WITH_CLS,
    VISION_TOWERS_WITHOUT_CLS,
    LlavaSPConfig,
)
from sp_core.image_processing import LlavaSPImageProcessor
from sp_core.modeling import LlavaSPForConditionalGeneration, default_generation_config
from sp_core.processing import build_llava_sp_processor, default_image_processor
from sp_core.projector import LlavaSPProjector

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
VISION_FEATURE_LAYER = -2  # LLaVA-1.5's mm_vision_select_layer: the penultimate CLIP layer, CLS dropped
# Vision towers whose patches form the square grid LLaVA-SP reads, and the dual encoders that hold one of them.
VISION_TOWERS = VISION_TOWERS_WITH_CLS + VISION_TOWERS_WITHOUT_CLS
DUAL_ENCODERS = ("clip", "siglip")
TOWER_NAMES = {"clip_vision_model": "CLIP", "siglip_vision_model": "SigLIP"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PREPROCESSOR_CONFIG = "preprocessor_config.json"
SENTENCEPIECE_MODEL, TOKENIZER_JSON = "tokenizer.model", "tokenizer.json"
PROVENANCE_FILE = "llava_sp_init.json"  # where the model came from; no loader reads it
# The projector options a caller may set; everything else in the config comes from the two sources.
SP_OPTIONS = SP_OPTION_NAMES + ("multimodal_projector_bias",)


class InitModelError(ValueError):
    """An input that cannot make a LLaVA-SP starting model; the message names the input and says what is wrong."""


# ---- the sources ----------------------------------------------------------------------------------------------------


def _read_source_config(source: str, role: str) -> PreTrainedConfig:
    """The config of a local directory or hub id; every error names the input ("vision tower '...'")."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InitModelError(f"{role} {source!r} is a file; expected a model directory or a hub id")
        if not (path / "config.json").is_file():
            raise InitModelError(f"{role} {source!r} has no config.json; expected a directory written by save_pretrained")
    elif source.startswith(("/", "./", "../", "~")) or source.count("/") > 1:
        raise InitModelError(f"{role} {source!r} does not exist (not a directory; hub ids look like 'org/name')")
    try:
        return AutoConfig.from_pretrained(str(path) if path.exists() else source, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        raise InitModelError(f"{role} {source!r}: cannot read its config: {_one_line(error)}") from error


def vision_config_of(vision_tower: str) -> PreTrainedConfig:
    """The vision config of a CLIP or SigLIP vision tower, or of a whole CLIPModel / SiglipModel checkpoint;
    anything else is refused."""
    config = _read_source_config(vision_tower, "vision tower")
    if config.model_type in DUAL_ENCODERS:
        config = config.vision_config
    if config.model_type not in VISION_TOWERS:
        raise InitModelError(
            f"vision tower {vision_tower!r} is not a CLIP or SigLIP tower: model_type {config.model_type!r}; "
            f"expected one of {', '.join(DUAL_ENCODERS + VISION_TOWERS)} (e.g. openai/clip-vit-large-patch14-336), "
            "because LLaVA-SP reads the tower's patches, without a CLS token, as a square grid"
        )
    if config.num_hidden_layers < 2:
        raise InitModelError(
            f"vision tower {vision_tower!r} has {config.num_hidden_layers} layer(s); LLaVA reads the penultimate "
            f"layer ({VISION_FEATURE_LAYER}), so it needs at least 2"
        )
    return config


def text_config_of(base_llm: str) -> PreTrainedConfig:
    config = _read_source_config(base_llm, "base LLM")
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise InitModelError(
            f"base LLM {base_llm!r} is not a causal LM: model_type {config.model_type!r} has no causal-LM class in "
            "transformers; expected a decoder LLM such as lmsys/vicuna-7b-v1.5 (model_type 'llama')"
        )
    return config


def _weight_format(source: str, role: str) -> bool | None:
    """use_safetensors for from_pretrained: True where the source has safetensors, else the library default."""
    if any(has_file(source, name) for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)):
        return True
    logger.warning("%s %s has no safetensors weights: loading it with the library default (pickled .bin files are "
                   "read with weights_only)", role, source)
    return None


def load_tokenizer(base_llm: str) -> tuple[PreTrainedTokenizerBase, int]:
    """The LLM's tokenizer with <image> added (if missing) and pad = unk as in LLaVA; also how many tokens were added."""
    if not is_sentencepiece_available() and has_file(base_llm, SENTENCEPIECE_MODEL) \
            and not has_file(base_llm, TOKENIZER_JSON):
        # transformers would fall back to a tiktoken reader and fail with an unrelated message.
        raise InitModelError(
            f"base LLM {base_llm!r} ships its tokenizer only as a SentencePiece {SENTENCEPIECE_MODEL} (as Vicuna "
            "does); converting it needs the sentencepiece package: pip install sentencepiece"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_llm, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        raise InitModelError(f"base LLM {base_llm!r}: cannot load its tokenizer: {_one_line(error)}") from error
    added = 0
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        added = tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token  # LLaVA pads with <unk> (id 0 for Vicuna)
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        logger.warning("base LLM %s has neither an unk nor a pad token: padding with eos %r", base_llm,
                       tokenizer.eos_token)
    return tokenizer, added


def image_processor_of(vision_tower: str, vision_config: PreTrainedConfig) -> tuple[BaseImageProcessor, str]:
    """The vision tower's image processor on Pillow, as LLaVA-1.5 resizes (else the tower kind's defaults at its
    image size), and where it came from."""
    image_size = vision_config.image_size
    if has_file(vision_tower, PREPROCESSOR_CONFIG):
        processor = AutoImageProcessor.from_pretrained(vision_tower, backend="pil", trust_remote_code=False)
        origin = f"{vision_tower}/{PREPROCESSOR_CONFIG}"
    else:
        kind = TOWER_NAMES[vision_config.model_type]
        processor, origin = default_image_processor(vision_config), f"{kind} defaults"
        logger.info("vision tower %s has no %s: using %s's defaults at %d px", vision_tower, PREPROCESSOR_CONFIG,
                    kind, image_size)
    settings = processor.to_dict()
    try:  # the uint8 preprocessing of the data pipeline must be able to follow these settings
        pipeline_settings = LlavaSPImageProcessor.from_config_dict(settings)
    except ValueError as error:
        raise InitModelError(f"vision tower {vision_tower!r}: {origin}: {error}") from error
    if pipeline_settings.image_size != image_size:
        raise InitModelError(
            f"vision tower {vision_tower!r}: {origin} crops to {pipeline_settings.image_size} px but the model takes "
            f"{image_size} px images (vision config image_size)"
        )
    return processor, origin


# ---- the model ------------------------------------------------------------------------------------------------------


def build_initial_model(
    base_llm: str,
    vision_tower: str,
    out: Path,
    dtype: torch.dtype = torch.float32,
    *,
    seed: int = 0,
    **sp_options: Any,
) -> Path:
    """Write the stage-1 starting model to `out` (which must not exist, or be empty) and return `out`.

    base_llm / vision_tower: local directories or hub ids (no remote code). sp_options are LlavaSPConfig options
    (sp_variant, sp_num_tokens, sp_extractor, sp_dfi, sp_dfi_kernel, sp_channels, sp_projector_bias, ...);
    unset ones keep LlavaSPConfig's defaults. Every input is checked before any weights are loaded.
    """
    out = Path(out)
    unknown = sorted(set(sp_options) - set(SP_OPTIONS))
    if unknown:
        raise InitModelError(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(SP_OPTIONS)}")
    if dtype not in DTYPES.values():
        raise InitModelError(f"dtype {dtype} is not supported; allowed: {', '.join(DTYPES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InitModelError(f"out {str(out)!r} already exists and is not an empty directory; choose a new one")

    base_llm, vision_tower = _local_or_hub(base_llm), _local_or_hub(vision_tower)
    # Every check that needs no weights comes first: a wrong input fails in seconds, not after loading 7B.
    text_config = text_config_of(base_llm)
    vision_config = vision_config_of(vision_tower)
    tokenizer, added_tokens = load_tokenizer(base_llm)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    model_config(vision_config, text_config, image_token_id, sp_options)  # validates the SP options on this grid
    llm_format, vision_format = _weight_format(base_llm, "base LLM"), _weight_format(vision_tower, "vision tower")
    image_processor, image_processor_origin = image_processor_of(vision_tower, vision_config)

    logger.info("loading base LLM %s (%s)", base_llm, _dtype_name(dtype))
    llm = load_exactly(AutoModelForCausalLM, base_llm, dtype=dtype, use_safetensors=llm_format,
                       trust_remote_code=False)
    source_vocab_size = llm.config.vocab_size
    config = model_config(vision_config, llm.config, image_token_id, sp_options)
    with torch.device("meta"):  # a skeleton: the 7B LLM is never allocated twice
        model = LlavaSPForConditionalGeneration(config)
    language_model = getattr(llm, llm.base_model_prefix, None)
    expected_class = type(model.model.language_model)
    if not isinstance(language_model, expected_class) or llm.get_output_embeddings() is None:
        raise InitModelError(
            f"base LLM {base_llm!r} ({type(llm).__name__}) does not split into a {expected_class.__name__} and an "
            "lm_head, which is how transformers' Llava holds a language model"
        )
    model.model.language_model = language_model
    model.lm_head = llm.get_output_embeddings()

    logger.info("loading vision tower %s (%s)", vision_tower, _dtype_name(dtype))
    vision = load_exactly(AutoModel, vision_tower, unused_prefixes=NON_VISION_PARTS, config=vision_config,
                          dtype=dtype, use_safetensors=vision_format, trust_remote_code=False)
    model.model.vision_tower = vision.requires_grad_(not config.freeze_vision_tower)
    model.model.multi_modal_projector = _fresh_projector(model, seed).to(dtype)

    if len(tokenizer) > config.text_config.vocab_size:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    vocab_rows = model.get_input_embeddings().num_embeddings
    if config.image_token_id >= vocab_rows or model.config.text_config.vocab_size != vocab_rows:
        raise RuntimeError(f"vocabulary out of step: image token id {config.image_token_id}, embedding rows "
                           f"{vocab_rows}, config vocab_size {model.config.text_config.vocab_size}")
    left_on_meta = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if left_on_meta:
        raise RuntimeError(f"parameters not filled from any source: {left_on_meta[:5]}")
    model.generation_config = default_generation_config(model.config, tokenizer)
    processor = build_llava_sp_processor(model.config, tokenizer, image_processor)

    provenance = {
        "base_llm": base_llm,
        "vision_tower": vision_tower,
        "dtype": _dtype_name(dtype),
        "seed": seed,
        "sp_options": sp_options,
        "image_token": IMAGE_TOKEN,
        "image_token_id": config.image_token_id,
        "added_tokens": added_tokens,
        "vocab_size": {"source": source_vocab_size, "model": vocab_rows},
        "image_tokens_per_image": config.image_tokens_per_image,
        "weights": {"base_llm": "safetensors" if llm_format else "library default",
                    "vision_tower": "safetensors" if vision_format else "library default"},
        "image_processor": image_processor_origin,
        "transformers": transformers.__version__,
    }
    _save(out, model, processor, provenance)
    logger.info("wrote %s: sp_variant=%s, %d image tokens per image, vocab %d -> %d", out, config.sp_variant,
                config.image_tokens_per_image, source_vocab_size, vocab_rows)
    return out


def model_config(
    vision_config: PreTrainedConfig, text_config: PreTrainedConfig, image_token_id: int, sp_options: dict[str, Any]
) -> LlavaSPConfig:
    """LLaVA-1.5's wiring (penultimate layer, mlp2x_gelu, CLIP's CLS dropped) plus the caller's projector options."""
    return LlavaSPConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        vision_feature_layer=VISION_FEATURE_LAYER,
        vision_feature_select_strategy="full" if vision_config.model_type in VISION_TOWERS_WITHOUT_CLS else "default",
        projector_hidden_act="gelu",
        **sp_options,
    )


def _fresh_projector(model: LlavaSPForConditionalGeneration, seed: int) -> LlavaSPProjector:
    """A float32 projector initialised as the model initialises missing weights, reproducibly from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        projector = LlavaSPProjector(model.config)
        projector.apply(model._init_weights)
    return projector


def _save(out: Path, model: LlavaSPForConditionalGeneration, processor, provenance: dict) -> None:
    """Write next to `out` and rename at the end, so an interrupted run never leaves a directory that looks whole."""
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # our own leftover from an interrupted run
    partial.mkdir(parents=True)
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    (partial / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    if out.exists():
        out.rmdir()  # checked empty above
    partial.rename(out)


def _local_or_hub(source: str) -> str:
    """A local directory as an absolute path (so `~` works everywhere), a hub id unchanged."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else str(source)


def _dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
