"""Pure, synchronous compatibility rules (SPEC.md §1–5): no I/O, no asyncio.

- families: which family a model id belongs to, by name (§1);
- profiles: how to talk to one model on one engine, in five layers (§2);
- post-processing: cleaning answers, whole or streamed, harmony split (§3);
- smoke: classifying the smoke-test answer (§4);
- resolution: one identity for a model id across every step, with validation (§5).
"""

from ._answers import AnswerDelta, AnswerParts, AnswerStream, clean_answer
from ._capabilities import (
    CAPABILITY_KEYS,
    CAPABILITY_STATUSES,
    Capability,
    capabilities_to_dict,
    untested_capabilities,
)
from ._families import FAMILY_DEFAULTS, UNKNOWN_FAMILY, detect_family, family_defaults
from ._generation import generation_params
from ._harmony import (
    HarmonyDelta,
    HarmonyParts,
    HarmonyStreamPostprocessor,
    postprocess_harmony,
    split_harmony,
)
from ._huggingface import HFRef, parse_hf_reference
from ._markers import BAD_MARKERS, HARMONY_MARKERS, MARKER_CATALOGUE, USER_TURN_MARKERS, TemplateMarkers
from ._metadata import ModelMetadata, is_marker_token, metadata_from_hf_configs
from ._model_ids import validate_model_id
from ._overrides import select_user_overrides
from ._profiles import (
    LAYERS,
    Profile,
    ProfileCache,
    build_profile,
    learn_from_smoke,
    rebuild_profile,
    resolve_family,
)
from ._providers import (
    KNOWN_PROVIDERS,
    LOCAL_ENGINES,
    REMOTE_PROVIDERS,
    normalize_engine,
    profile_key,
    split_provider_prefix,
)
from ._resolution import BUILTIN_ALIASES, Resolution, default_engine, resolve
from ._smoke import SMOKE_PROMPT, SmokeVerdict, classify_answer
from ._steps import (
    POSTPROCESSORS,
    apply_postprocess,
    strip_role_tokens,
    trim_after_user_marker,
)
from ._streaming import StreamPostprocessor

__all__ = [
    "CAPABILITY_KEYS",
    "CAPABILITY_STATUSES",
    "Capability",
    "capabilities_to_dict",
    "untested_capabilities",
    "MARKER_CATALOGUE",
    "AnswerDelta",
    "AnswerParts",
    "AnswerStream",
    "TemplateMarkers",
    "clean_answer",
    "BAD_MARKERS",
    "BUILTIN_ALIASES",
    "FAMILY_DEFAULTS",
    "HARMONY_MARKERS",
    "KNOWN_PROVIDERS",
    "LAYERS",
    "LOCAL_ENGINES",
    "POSTPROCESSORS",
    "REMOTE_PROVIDERS",
    "SMOKE_PROMPT",
    "UNKNOWN_FAMILY",
    "USER_TURN_MARKERS",
    "HFRef",
    "HarmonyDelta",
    "HarmonyParts",
    "HarmonyStreamPostprocessor",
    "ModelMetadata",
    "is_marker_token",
    "Profile",
    "ProfileCache",
    "Resolution",
    "SmokeVerdict",
    "StreamPostprocessor",
    "apply_postprocess",
    "build_profile",
    "classify_answer",
    "default_engine",
    "detect_family",
    "family_defaults",
    "generation_params",
    "learn_from_smoke",
    "metadata_from_hf_configs",
    "normalize_engine",
    "parse_hf_reference",
    "postprocess_harmony",
    "profile_key",
    "rebuild_profile",
    "resolve",
    "resolve_family",
    "select_user_overrides",
    "split_harmony",
    "split_provider_prefix",
    "strip_role_tokens",
    "trim_after_user_marker",
    "validate_model_id",
]
