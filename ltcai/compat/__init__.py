"""Pure, synchronous compatibility rules (SPEC.md §1–5): no I/O, no asyncio.

- families: which family a model id belongs to, by name (§1);
- profiles: how to talk to one model on one engine, in five layers (§2);
- post-processing: cleaning answers, whole or streamed, harmony split (§3);
- smoke: classifying the smoke-test answer (§4);
- resolution: one identity for a model id across every step, with validation (§5).
"""

from ._families import UNKNOWN_FAMILY, detect_family
from ._markers import BAD_MARKERS, HARMONY_MARKERS, USER_TURN_MARKERS
from ._postprocess import (
    POSTPROCESSORS,
    HarmonyDelta,
    HarmonyParts,
    HarmonyStreamPostprocessor,
    StreamPostprocessor,
    apply_postprocess,
    postprocess_harmony,
    split_harmony,
    strip_role_tokens,
    trim_after_user_marker,
)
from ._profiles import (
    FAMILY_DEFAULTS,
    LAYERS,
    ModelMetadata,
    Profile,
    ProfileCache,
    build_profile,
    family_defaults,
    generation_params,
    learn_from_smoke,
    metadata_from_hf_configs,
    profile_key,
    rebuild_profile,
    resolve_family,
    select_user_overrides,
)
from ._providers import KNOWN_PROVIDERS, LOCAL_ENGINES, REMOTE_PROVIDERS, normalize_engine, split_provider_prefix
from ._resolution import (
    BUILTIN_ALIASES,
    HFRef,
    Resolution,
    default_engine,
    parse_hf_reference,
    resolve,
    validate_model_id,
)
from ._smoke import SMOKE_PROMPT, SmokeVerdict, classify_answer

__all__ = [
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
