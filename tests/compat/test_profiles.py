"""Unit tests of the layered compat profile (SPEC.md §2, §4 last paragraph, §7 params)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ltcai.compat import _profiles as profiles
from ltcai.compat._families import FAMILY_DEFAULTS, family_defaults, template_style
from ltcai.compat._generation import generation_params
from ltcai.compat._metadata import ModelMetadata, metadata_from_hf_configs
from ltcai.compat._overrides import LAYERED_FIELDS, select_user_overrides
from ltcai.compat._profiles import (
    STATE_FIELDS,
    Profile,
    ProfileCache,
    build_profile,
    learn_from_smoke,
    rebuild_profile,
    resolve_family,
)
from ltcai.compat._providers import profile_key
from ltcai.compat._stops import merge_stops
from ltcai.errors import InvalidRequest

# --------------------------------------------------------------------------- the table

# SPEC.md §2, row by row, as written there (not as the module writes it).
SPEC_TABLE = {
    "gpt-oss": dict(
        supports_system=True, vision=False, template="gpt_oss",
        preferred_engines=("ollama", "llamacpp", "vllm", "mlx"), temperature=0.1, top_p=0.9,
        max_tokens=2048, stop=("<|im_end|>", "<|end|>", "</s>", "<|user|>", "<|assistant|>"),
        no_draft=True, postprocess=("trim_after_user_marker", "strip_role_tokens"),
    ),
    "gemma": dict(
        supports_system=True, vision=True, template="gemma",
        preferred_engines=("mlx", "ollama", "llamacpp"), temperature=0.2, top_p=0.95,
        max_tokens=4096, stop=("<end_of_turn>", "</s>"), no_draft=False,
        postprocess=("strip_role_tokens",),
    ),
    "qwen": dict(
        supports_system=True, vision=False, template="chatml",
        preferred_engines=("ollama", "mlx", "vllm"), temperature=0.2, top_p=0.9,
        max_tokens=4096, stop=("<|im_end|>", "<|endoftext|>"), no_draft=False,
        postprocess=("strip_role_tokens",),
    ),
    "llama": dict(
        supports_system=True, vision=False, template="tokenizer_default",
        preferred_engines=("ollama", "mlx", "llamacpp", "vllm"), temperature=0.2, top_p=0.9,
        max_tokens=4096, stop=("</s>", "[INST]", "[/INST]"), no_draft=False,
        postprocess=("strip_role_tokens",),
    ),
    "mistral": dict(
        supports_system=False, vision=False, template="tokenizer_default",
        preferred_engines=("ollama", "mlx", "llamacpp"), temperature=0.2, top_p=0.9,
        max_tokens=4096, stop=("</s>", "[INST]", "[/INST]"), no_draft=False,
        postprocess=("strip_role_tokens",),
    ),
    "phi": dict(
        supports_system=True, vision=False, template="tokenizer_default",
        preferred_engines=("ollama", "mlx"), temperature=0.2, top_p=0.9,
        max_tokens=2048, stop=("<|end|>", "<|endoftext|>"), no_draft=False,
        postprocess=("strip_role_tokens",),
    ),
    "deepseek": dict(
        supports_system=True, vision=False, template="tokenizer_default",
        preferred_engines=("ollama", "mlx", "vllm"), temperature=0.2, top_p=0.9,
        max_tokens=4096, stop=("<|EOT|>", "</s>"), no_draft=False,
        postprocess=("strip_role_tokens",),
    ),
    "unknown": dict(
        supports_system=True, vision=False, template="tokenizer_default",
        preferred_engines=(), temperature=0.2, top_p=0.9, max_tokens=2048,
        stop=("<|im_end|>", "<|endoftext|>", "</s>", "<|user|>", "<|assistant|>"),
        no_draft=False, postprocess=("strip_role_tokens",),
    ),
}  # fmt: skip

# A model id per family, detected by name (SPEC.md §1).
NAMED = {
    "gpt-oss": "gpt-oss:20b",
    "gemma": "google/gemma-3-1b-it",
    "qwen": "Qwen/Qwen2.5-7B-Instruct",
    "llama": "llama3.2:1b",
    "mistral": "mistralai/Mistral-7B-Instruct-v0.3",
    "phi": "microsoft/Phi-3-mini-4k-instruct",
    "deepseek": "deepseek-ai/deepseek-coder-6.7b",
    "unknown": "some-random-model",
}


@pytest.mark.parametrize("family", sorted(SPEC_TABLE))
def test_family_table_row_matches_spec(family: str) -> None:
    assert dict(FAMILY_DEFAULTS[family]) == SPEC_TABLE[family]


def test_family_table_lists_exactly_the_spec_rows() -> None:
    assert set(FAMILY_DEFAULTS) == set(SPEC_TABLE)


@pytest.mark.parametrize("family", sorted(SPEC_TABLE))
def test_profile_built_from_name_carries_the_row(family: str) -> None:
    profile = build_profile(NAMED[family])
    assert profile.family == family
    for name, value in SPEC_TABLE[family].items():
        assert getattr(profile, name) == value, name
        assert profile.source_of(name) == "family"
    assert profile.chat_template is None


@pytest.mark.parametrize("family", ["yi", "claude", "gpt-4", "gpt-3.5", "o1", "whatever", None, ""])
def test_unlisted_families_get_the_unknown_row(family: str | None) -> None:
    assert family_defaults(family) == FAMILY_DEFAULTS["unknown"]


@pytest.mark.parametrize("model_id", ["yi-34b-chat", "claude-3-opus", "gpt-4o", "o1-mini"])
def test_unlisted_family_keeps_its_name_but_uses_unknown_values(model_id: str) -> None:
    profile = build_profile(model_id)
    assert profile.family != "unknown"
    assert profile.stop == SPEC_TABLE["unknown"]["stop"]
    assert profile.max_tokens == 2048


def test_gpt_oss_trims_before_it_strips() -> None:
    assert build_profile("gpt-oss-20b").postprocess == ("trim_after_user_marker", "strip_role_tokens")


def test_chatml_family_uses_the_qwen_row() -> None:
    assert family_defaults("chatml") == FAMILY_DEFAULTS["qwen"]


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        FAMILY_DEFAULTS["qwen"]["temperature"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        FAMILY_DEFAULTS["new"] = {}  # type: ignore[index]


# --------------------------------------------------------------------------- identity, key


def test_profile_key_with_and_without_engine() -> None:
    assert profile_key("llama3.2:1b", "ollama") == "ollama:llama3.2:1b"
    assert profile_key("llama3.2:1b", "OLLAMA") == "ollama:llama3.2:1b"
    assert profile_key("m", "local_mlx") == "mlx:m"
    assert profile_key("m", "llama.cpp") == "llamacpp:m"
    assert profile_key("m") == "m"
    assert profile_key("m", "") == "m"


def test_profile_key_keeps_a_plugin_engine_lower_cased() -> None:
    assert profile_key("m", "MyEngine") == "myengine:m"


def test_profile_carries_identity_and_untested_state() -> None:
    profile = build_profile("Qwen/Qwen2.5-7B-Instruct", "Local-MLX")
    assert profile.model_id == "Qwen/Qwen2.5-7B-Instruct"
    assert profile.engine == "mlx"
    assert profile.key == "mlx:Qwen/Qwen2.5-7B-Instruct"
    assert (profile.loaded, profile.chat_compatible, profile.quality_status) == (False, True, "unknown")
    assert (profile.last_test_error, profile.validated_at) == (None, None)


def test_empty_model_id_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        build_profile("")


# --------------------------------------------------------------------------- layer 2


def _llama3_metadata() -> ModelMetadata:
    return ModelMetadata(
        chat_template="{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}",
        eos_token="<|eot_id|>",
        bos_token="<|begin_of_text|>",
        architecture="llama",
        source="gguf",
    )


def test_llama3_eot_joins_the_stops_from_the_model() -> None:
    profile = build_profile("meta-llama/Llama-3.2-1B-Instruct", "llamacpp", metadata=_llama3_metadata())
    assert profile.family == "llama" and profile.source_of("family") == "family"
    assert profile.stop == ("</s>", "[INST]", "[/INST]", "<|eot_id|>")
    assert profile.source_of("stop") == "model"
    assert profile.template == "tokenizer_default" and profile.source_of("template") == "model"
    assert profile.chat_template == _llama3_metadata().chat_template
    assert profile.source_of("chat_template") == "model"


def test_chatml_template_on_unknown_name_corrects_family() -> None:
    metadata = ModelMetadata(chat_template="<|im_start|>{{ m }}<|im_end|>", eos_token="<|im_end|>")
    profile = build_profile("HuggingFaceTB/SmolLM2-135M-Instruct", metadata=metadata)
    assert profile.family == "chatml" and profile.source_of("family") == "model"
    assert profile.template == "chatml" and profile.source_of("template") == "model"
    assert "<|im_end|>" in profile.stop
    # The row is the ChatML (qwen) row, from layer 1.
    assert profile.max_tokens == 4096 and profile.source_of("max_tokens") == "family"


def test_named_family_is_not_overruled_by_metadata() -> None:
    metadata = ModelMetadata(chat_template="<|im_start|>x", architecture="gemma3")
    profile = build_profile("my-llama-finetune", metadata=metadata)
    assert profile.family == "llama" and profile.source_of("family") == "family"
    # …but the model's own format and stops still count.
    assert profile.template == "chatml"
    assert "<|im_end|>" in profile.stop


def test_gemma_template_on_unknown_name_makes_gemma() -> None:
    metadata = ModelMetadata(chat_template="<start_of_turn>user\n{{ x }}<end_of_turn>", eos_token="<eos>")
    profile = build_profile("local/finetune", metadata=metadata)
    assert (profile.family, profile.source_of("family")) == ("gemma", "model")
    assert (profile.template, profile.source_of("template")) == ("gemma", "model")
    assert profile.stop == ("<end_of_turn>", "</s>", "<eos>")


def test_gemma_base_without_template_takes_template_from_family() -> None:
    metadata = ModelMetadata(architecture="gemma3", eos_token="<eos>", bos_token="<bos>", source="gguf")
    profile = build_profile("base-270m.gguf", "llamacpp", metadata=metadata)
    assert (profile.family, profile.source_of("family")) == ("gemma", "model")
    assert (profile.template, profile.source_of("template")) == ("gemma", "family")
    assert profile.chat_template is None and profile.source_of("chat_template") == "family"


def test_architecture_llama_alone_proves_nothing() -> None:
    profile = build_profile("smol", metadata=ModelMetadata(architecture="llama"))
    assert (profile.family, profile.source_of("family")) == ("unknown", "family")


def test_metadata_name_can_correct_an_unknown_family() -> None:
    profile = build_profile("model.gguf", metadata=ModelMetadata(name="Qwen2.5 0.5B Instruct"))
    assert (profile.family, profile.source_of("family")) == ("qwen", "model")


def test_unrecognised_template_is_used_as_the_model_own() -> None:
    metadata = ModelMetadata(chat_template="{{ messages }}")
    profile = build_profile("gpt-oss-20b", metadata=metadata)
    assert profile.template == "tokenizer_default" and profile.source_of("template") == "model"


def test_harmony_template_keeps_gpt_oss_format() -> None:
    metadata = ModelMetadata(chat_template="<|start|>assistant<|channel|>final<|message|>", eos_token="<|return|>")
    profile = build_profile("weird-name", metadata=metadata)
    assert profile.family == "gpt-oss" and profile.template == "gpt_oss"
    assert profile.stop[-1] == "<|return|>"


def test_repeating_family_stops_does_not_claim_the_stop_field() -> None:
    metadata = ModelMetadata(chat_template="<|im_start|>", eos_token="<|im_end|>")
    profile = build_profile("Qwen/Qwen2.5-7B-Instruct", metadata=metadata)
    assert profile.stop == ("<|im_end|>", "<|endoftext|>")
    assert profile.source_of("stop") == "family"
    assert profile.source_of("template") == "model"


def test_whitespace_tokens_never_become_stops() -> None:
    metadata = ModelMetadata(eos_token="\n", eot_token=" ", extra_stop_tokens=("", "<|x|>"))
    assert metadata.stop_tokens() == ("<|x|>",)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("<|im_start|>user", "chatml"),
        ("<start_of_turn>user", "gemma"),
        ("<|channel|>final", "gpt_oss"),
        ("<|start_header_id|>", "tokenizer_default"),
    ],
)
def test_template_style(text: str, name: str) -> None:
    style = template_style(text)
    assert style is not None and style.template == name


def test_template_style_none() -> None:
    assert template_style(None) is None
    assert template_style("{{ x }}") is None


# --------------------------------------------------------------------------- HF configs


LLAMA31_TOKENIZER = {
    "bos_token": "<|begin_of_text|>",
    "eos_token": "<|eot_id|>",
    "chat_template": "{{- bos_token }}<|start_header_id|>…",
    "added_tokens_decoder": {
        "128000": {"content": "<|begin_of_text|>", "special": True},
        "128001": {"content": "<|end_of_text|>", "special": True},
        "128008": {"content": "<|eom_id|>", "special": True},
        "128009": {"content": "<|eot_id|>", "special": True},
    },
}


def test_hf_llama31_eos_list_resolved_through_added_tokens() -> None:
    meta = metadata_from_hf_configs(LLAMA31_TOKENIZER, {"eos_token_id": [128001, 128008, 128009]})
    assert meta.eos_token == "<|eot_id|>"
    assert meta.bos_token == "<|begin_of_text|>"
    assert meta.extra_stop_tokens == ("<|end_of_text|>", "<|eom_id|>")
    assert meta.chat_template.startswith("{{- bos_token }}")
    assert meta.source == "hf_config"


def test_hf_eos_from_generation_config_when_tokenizer_has_none() -> None:
    tok = {k: v for k, v in LLAMA31_TOKENIZER.items() if k != "eos_token"}
    meta = metadata_from_hf_configs(tok, {"eos_token_id": 128009, "bos_token_id": 128000})
    assert meta.eos_token == "<|eot_id|>"
    assert meta.extra_stop_tokens == ()


def test_hf_added_token_dict_and_unknown_ids() -> None:
    tok = {"eos_token": {"content": "<end_of_turn>", "lstrip": False}, "bos_token": {"content": "<bos>"}}
    meta = metadata_from_hf_configs(tok, {"eos_token_id": [1, 106]})  # ids not in the decoder
    assert (meta.eos_token, meta.bos_token, meta.extra_stop_tokens) == ("<end_of_turn>", "<bos>", ())


def test_hf_named_template_list_and_separate_template_file() -> None:
    tok = {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}
    assert metadata_from_hf_configs(tok, None).chat_template == "D"
    assert metadata_from_hf_configs(tok, None, chat_template="J").chat_template == "J"
    first = {"chat_template": [{"name": "rag", "template": "R"}]}
    assert metadata_from_hf_configs(first, None).chat_template == "R"


def test_hf_model_config_gives_architecture_and_context() -> None:
    meta = metadata_from_hf_configs(
        {"model_max_length": 1000000000000000019884624838656},
        None,
        model_config={"model_type": "gemma3", "text_config": {"max_position_embeddings": 32768}},
    )
    assert (meta.architecture, meta.context_length) == ("gemma3", 32768)
    assert build_profile("org/ft", metadata=meta).family == "gemma"


def test_hf_empty_inputs() -> None:
    meta = metadata_from_hf_configs(None, None)
    assert meta == ModelMetadata(source="hf_config")


# --------------------------------------------------------------------------- layers 3-5, stop merge


def test_each_layer_wins_over_the_ones_below() -> None:
    metadata = _llama3_metadata()
    profile = build_profile(
        "meta-llama/Llama-3.2-1B-Instruct",
        "llamacpp",
        metadata=metadata,
        engine_overrides={"max_tokens": 1024, "temperature": 0.3},
        user_overrides={"temperature": 0.5, "top_p": 0.8},
        learned={"top_p": 0.7},
    )
    assert (profile.max_tokens, profile.source_of("max_tokens")) == (1024, "engine")
    assert (profile.temperature, profile.source_of("temperature")) == (0.5, "user")
    assert (profile.top_p, profile.source_of("top_p")) == (0.7, "learned")
    assert profile.source_of("no_draft") == "family"


def test_stop_merge_extends_in_order_without_duplicates() -> None:
    profile = build_profile(
        "meta-llama/Llama-3.2-1B-Instruct",
        metadata=_llama3_metadata(),
        engine_overrides={"extra_stop": ["<|eot_id|>", "<|eom_id|>"]},
        user_overrides={"extra_stop": "###"},
    )
    assert profile.stop == ("</s>", "[INST]", "[/INST]", "<|eot_id|>", "<|eom_id|>", "###")
    assert profile.source_of("stop") == "user"


def test_stop_override_replaces_and_extra_stop_extends_within_a_layer() -> None:
    profile = build_profile(
        "llama3.2:1b",
        metadata=_llama3_metadata(),
        user_overrides={"stop": ["<|eot_id|>"], "extra_stop": ["END"]},
    )
    assert profile.stop == ("<|eot_id|>", "END")
    assert profile.source_of("stop") == "user"


def test_learned_stops_extend_a_user_replacement() -> None:
    profile = build_profile("llama3.2:1b", user_overrides={"stop": ["A"]}, learned={"extra_stop": ["<|user|>"]})
    assert profile.stop == ("A", "<|user|>")
    assert profile.source_of("stop") == "learned"


def test_empty_stop_strings_are_dropped() -> None:
    profile = build_profile("llama3.2:1b", user_overrides={"stop": ["", "X", "X"]})
    assert profile.stop == ("X",)


def test_user_can_choose_the_family_row() -> None:
    profile = build_profile("my-finetune", user_overrides={"family": "Gemma"})
    assert (profile.family, profile.source_of("family")) == ("gemma", "user")
    assert profile.stop == SPEC_TABLE["gemma"]["stop"] and profile.source_of("stop") == "family"


def test_resolve_family_for_the_engine_hook() -> None:
    assert resolve_family("llama3.2:1b") == ("llama", "family")
    assert resolve_family("x", ModelMetadata(architecture="qwen2")) == ("qwen", "model")


def test_none_override_values_mean_unset() -> None:
    profile = build_profile("llama3.2:1b", user_overrides={"temperature": None})
    assert profile.source_of("temperature") == "family"


@pytest.mark.parametrize(
    "overrides",
    [
        {"temprature": 0.1},
        {"temperature": "hot"},
        {"temperature": -1},
        {"top_p": 0},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"max_tokens": True},
        {"max_tokens": 1.5},
        {"stop": [1, 2]},
        {"vision": "yes"},
        {"family": ""},
        {"chat_template": 3},
    ],
)
def test_bad_override_is_a_clear_error(overrides: dict) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_profile("llama3.2:1b", user_overrides=overrides)
    assert info.value.code == "invalid_profile_override"
    assert "user" in info.value.message and next(iter(overrides)) in info.value.message


def test_overrides_must_be_a_mapping() -> None:
    with pytest.raises(InvalidRequest):
        build_profile("llama3.2:1b", engine_overrides=["stop"])  # type: ignore[arg-type]


def test_preferred_engines_override_is_normalized() -> None:
    profile = build_profile("x", user_overrides={"preferred_engines": ["llama.cpp", "Local_MLX", "mine"]})
    assert profile.preferred_engines == ("llamacpp", "mlx", "mine")


@given(st.lists(st.lists(st.text(max_size=6), max_size=6), max_size=5))
def test_merge_stops_is_an_ordered_union(lists: list[list[str]]) -> None:
    merged = merge_stops(*lists)
    flat = [s for stops in lists for s in stops if s]
    assert set(merged) == set(flat)
    assert len(merged) == len(set(merged))
    assert list(merged) == sorted(set(flat), key=flat.index)


def test_explain_lists_every_field_with_its_layer() -> None:
    profile = build_profile("llama3.2:1b", metadata=_llama3_metadata(), user_overrides={"max_tokens": 99})
    rows = profile.explain()
    assert [r.field for r in rows] == list(LAYERED_FIELDS + STATE_FIELDS)
    as_dict = {field: (value, layer) for field, value, layer in rows}
    assert as_dict["max_tokens"] == (99, "user")
    assert as_dict["stop"][1] == "model"
    assert as_dict["quality_status"] == ("unknown", "state")


def test_source_of_unknown_field() -> None:
    with pytest.raises(KeyError):
        build_profile("x").source_of("colour")


# --------------------------------------------------------------------------- learned (smoke)


WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_leaked_marker_becomes_a_learned_stop() -> None:
    profile = build_profile("llama3.2:1b", "ollama")
    learned = learn_from_smoke(profile, "failed", "role token leakage (<|im_start|>)", "<|im_start|>", WHEN)
    assert learned.stop[-1] == "<|im_start|>"
    assert learned.source_of("stop") == "learned"
    assert learned.overrides["learned"]["extra_stop"] == ("<|im_start|>",)
    assert learned.quality_status == "failed"
    assert learned.chat_compatible is False
    assert learned.last_test_error == "role token leakage (<|im_start|>)"
    assert learned.validated_at == "2025-01-02T03:04:05+00:00"


@pytest.mark.parametrize("status", ["ok", "degraded"])
def test_usable_verdict_clears_the_error(status: str) -> None:
    failed = learn_from_smoke(build_profile("x"), "failed", "empty response", None, "t0")
    again = learn_from_smoke(failed, status, "mild repetition" if status == "degraded" else "ok", None, "t1")
    assert again.chat_compatible is True
    assert again.quality_status == status
    assert again.last_test_error is None
    assert again.validated_at == "t1"
    assert again.stop == build_profile("x").stop


def test_learned_markers_accumulate_and_survive_rebuilds() -> None:
    profile = build_profile("llama3.2:1b")
    profile = learn_from_smoke(profile, "failed", "special token leakage", "<|x|>", "t0")
    profile = learn_from_smoke(profile, "failed", "special token leakage", "<|y|>", "t1")
    assert profile.stop[-2:] == ("<|x|>", "<|y|>")
    rebuilt = rebuild_profile(profile, user_overrides={"stop": ["S"]})
    assert rebuilt.stop == ("S", "<|x|>", "<|y|>")
    assert rebuilt.quality_status == "failed" and rebuilt.validated_at == "t1"


def test_marker_already_a_stop_is_remembered_without_claiming_stop() -> None:
    profile = learn_from_smoke(build_profile("x"), "failed", "role token leakage (<|user|>)", "<|user|>", None)
    assert profile.overrides["learned"]["extra_stop"] == ("<|user|>",)
    assert profile.source_of("stop") == "family"


def test_bad_verdict_status_refused() -> None:
    with pytest.raises(ValueError):
        learn_from_smoke(build_profile("x"), "unknown", "", None, None)


def test_with_state_only_touches_state() -> None:
    profile = build_profile("x").with_state(loaded=True)
    assert profile.loaded is True
    with pytest.raises(ValueError):
        profile.with_state(temperature=1.0)
    with pytest.raises(ValueError):
        profile.with_state(quality_status="great")


# --------------------------------------------------------------------------- JSON


def _rich_profile() -> Profile:
    profile = build_profile(
        "meta-llama/Llama-3.2-1B-Instruct",
        "llama.cpp",
        metadata=ModelMetadata(
            chat_template="<|start_header_id|>",
            eos_token="<|eot_id|>",
            extra_stop_tokens=("<|eom_id|>",),
            context_length=131072,
            source="gguf",
        ),
        engine_overrides={"max_tokens": 512},
        user_overrides={"extra_stop": ["###"], "preferred_engines": ["llamacpp"]},
    )
    profile = learn_from_smoke(profile, "degraded", "mild repetition", "<|x|>", WHEN)
    return profile.with_state(loaded=True)


def test_json_round_trip_keeps_values_layers_inputs_and_state() -> None:
    profile = _rich_profile()
    data = json.loads(json.dumps(profile.to_dict()))
    back = Profile.from_dict(data)
    assert back == profile
    assert {n: back.source_of(n) for n in LAYERED_FIELDS} == {n: profile.source_of(n) for n in LAYERED_FIELDS}
    assert back.metadata == profile.metadata
    # and it can still be rebuilt from the stored inputs
    assert rebuild_profile(back) == profile


def test_json_form_is_stable_and_readable() -> None:
    data = _rich_profile().to_dict()
    assert data["schema"] == 1
    assert data["key"] == "llamacpp:meta-llama/Llama-3.2-1B-Instruct"
    assert data["fields"]["stop"]["layer"] == "learned"
    assert data["fields"]["max_tokens"] == {"value": 512, "layer": "engine"}
    assert data["state"]["quality_status"] == "degraded"
    assert data["inputs"]["metadata"]["context_length"] == 131072
    assert json.dumps(data, sort_keys=True) == json.dumps(_rich_profile().to_dict(), sort_keys=True)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("fields"),
        lambda d: d.update(schema=99),
        lambda d: d["fields"]["stop"].update(layer="cosmic"),
        lambda d: d["fields"]["temperature"].update(value="hot"),
        lambda d: d["state"].update(quality_status="great"),
    ],
)
def test_damaged_json_is_a_value_error(damage) -> None:
    data = _rich_profile().to_dict()
    damage(data)
    with pytest.raises(ValueError):
        Profile.from_dict(data)


# --------------------------------------------------------------------------- cache


def test_ensure_profile_builds_once_then_returns_the_cached_one() -> None:
    cache = ProfileCache()
    first = cache.ensure_profile("llama3.2:1b", "Ollama")
    assert cache.get("llama3.2:1b", "ollama") is first
    assert "ollama:llama3.2:1b" in cache
    again = cache.ensure_profile("llama3.2:1b", "ollama", user_overrides={"temperature": 1.0})
    assert again is first  # cached: the layers given the second time are not applied
    assert len(cache) == 1


def test_cache_keys_engine_and_no_engine_apart() -> None:
    cache = ProfileCache()
    a = cache.ensure_profile("m", "mlx")
    b = cache.ensure_profile("m")
    assert a is not b
    assert [key for key, _ in cache.items()] == ["m", "mlx:m"]
    assert cache.by_key("mlx:m") is a


def test_cache_put_replaces_and_forget_drops() -> None:
    cache = ProfileCache([build_profile("m", "vllm")])
    updated = learn_from_smoke(cache.get("m", "vllm"), "ok", "ok", None, "t")
    cache.put(updated)
    assert cache.get("m", "vllm").quality_status == "ok"
    assert cache.forget("m", "vllm") is True
    assert cache.forget("m", "vllm") is False
    assert cache.get("m", "vllm") is None


def test_caches_do_not_share_state() -> None:
    one, two = ProfileCache(), ProfileCache()
    one.ensure_profile("m")
    assert len(two) == 0


def test_select_user_overrides_specific_key_wins() -> None:
    table = {"m": {"temperature": 0.1, "top_p": 0.5}, "ollama:m": {"temperature": 0.9}, "other": {"x": 1}}
    assert select_user_overrides(table, "m", "Ollama") == {"temperature": 0.9, "top_p": 0.5}
    assert select_user_overrides(table, "m") == {"temperature": 0.1, "top_p": 0.5}
    assert select_user_overrides(None, "m", "mlx") == {}


# --------------------------------------------------------------------------- generation params


def test_generation_params_come_from_the_profile() -> None:
    profile = build_profile("Qwen/Qwen2.5-7B-Instruct")
    assert generation_params(profile, {}) == {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 4096,
        "stop": ["<|im_end|>", "<|endoftext|>"],
    }


def test_request_non_null_values_win() -> None:
    profile = build_profile("Qwen/Qwen2.5-7B-Instruct")
    params = generation_params(profile, {"temperature": 0, "top_p": None, "max_tokens": 32, "stop": None})
    assert params["temperature"] == 0.0
    assert params["top_p"] == 0.9
    assert params["max_tokens"] == 32
    assert params["stop"] == ["<|im_end|>", "<|endoftext|>"]


def test_request_stops_add_to_the_profile_stops() -> None:
    profile = build_profile("Qwen/Qwen2.5-7B-Instruct")
    assert generation_params(profile, {"stop": "\n\n"})["stop"] == ["<|im_end|>", "<|endoftext|>", "\n\n"]
    assert generation_params(profile, {"stop": ["<|im_end|>", "Q:"]})["stop"][-1] == "Q:"


def test_bad_request_value_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequest) as info:
        generation_params(build_profile("x"), {"max_tokens": -5})
    assert "request" in info.value.message


def test_exported_names() -> None:
    public = {n for n in dir(profiles) if not n.startswith("_")}
    assert set(profiles.__all__) <= public
    for name in ("build_profile", "Profile", "ProfileCache", "learn_from_smoke"):
        assert name in profiles.__all__
