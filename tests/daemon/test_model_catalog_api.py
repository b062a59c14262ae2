"""``/v1/models`` lists what can be used, not only what is loaded: a real ``ltcai serve``
(FAKE engine plugin) with a GGUF in its models dir, one in a user ``model_dirs`` folder, a
GGUF repository in a private Hugging Face cache, a user alias and a loaded model.

Before, the list was empty until something was prepared, so model pickers showed nothing.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import openai


def _gguf(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\0" * 60)
    return path


def test_models_lists_aliases_files_the_hf_cache_and_what_is_loaded(start_daemon, daemon_root):
    extra = daemon_root / "my-models"
    cache = daemon_root / "hf"
    snapshot = cache / "models--acme--tiny-GGUF" / "snapshots" / "abc123"
    _gguf(snapshot / "tiny-Q4_K_M.gguf")
    _gguf(snapshot / "tiny-Q8_0.gguf")
    _gguf(snapshot / "mmproj-tiny-F16.gguf")  # a vision projector is not a model
    _gguf(cache / "models--acme--solo-GGUF" / "snapshots" / "def456" / "solo.gguf")
    (cache / "models--acme--not-gguf" / "snapshots" / "x").mkdir(parents=True)
    mine = _gguf(extra / "sub" / "mine.Q4_0.gguf")
    _gguf(extra / "big-00002-of-00002.gguf")  # only a split model's first part is listed
    first = _gguf(extra / "big-00001-of-00002.gguf")
    daemon = start_daemon(
        {"HF_HUB_CACHE": str(cache)},
        config=f'model_dirs = ["{extra}"]\n[aliases]\npal = {{ ollama = "llama3.2:1b", fake = "fake-ok-aliased" }}\n',
    )
    ours = _gguf(daemon.data_dir / "models" / "ours.gguf")
    daemon.prepare("fake-ok-loaded")

    http = httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket_path)), timeout=30)
    client = openai.OpenAI(base_url="http://ltcai/v1", api_key="unused", http_client=http, max_retries=0)
    models = {m.id: m.model_extra["ltcai"] for m in client.models.list().data}
    http.close()

    loaded = models["fake-ok-loaded"]
    assert loaded["loaded"] is True and loaded["status"] == "ready" and loaded["engine"] == "fake"
    assert models["ollama:pal"] == {**models["ollama:pal"], "engine": "ollama", "loaded": False, "status": "available",
                                     "source": "alias", "resolved_model": "llama3.2:1b"}  # fmt: skip
    assert not [m for m in models if "pal" in m and m != "ollama:pal"]  # a plugin engine has no id prefix
    assert models["acme/tiny-GGUF:Q4_K_M"]["source"] == "hf_cache"
    assert models["acme/tiny-GGUF:Q8_0"]["path"].endswith("tiny-Q8_0.gguf")
    assert models["acme/solo-GGUF"]["engine"] == "llamacpp"
    assert models[str(mine)]["source"] == "model_dirs" and models[str(first)]["source"] == "model_dirs"
    assert models[str(ours)]["source"] == "models_dir" and models[str(ours)]["size"] == 64
    assert models["smollm2"]["resolved_model"] == "smollm2-135m-instruct-q4_1"  # the bundled default, installed
    listed = set(models)
    assert not any("mmproj" in m or "00002-of" in m or "not-gguf" in m for m in listed), listed
    assert "completion" in loaded["capabilities"] and "embedding" in loaded["capabilities"]
