"""The ``ltcai`` argument parser: every command with help that teaches by example."""

from __future__ import annotations

import argparse

from .. import __version__

__all__ = ["build_parser"]

_DESCRIPTION = """\
ltcai turns a model name into a model that really chats: it resolves the id, checks
(or installs) the engine, fetches the weights, starts the engine server, runs a smoke
test, and keeps the model ready behind one socket.

quick start:
  ltcai serve &                       start the daemon (or: ltcai service install)
  ltcai prepare smollm2               the bundled SmolLM2 model on llama.cpp
  ltcai chat smollm2 "What is 2+2?"   one answer
  ltcai chat smollm2                  an interactive chat
"""

_EPILOG = """\
model ids:
  smollm2                             a built-in alias (the embedded default)
  org/repo  or  hf.co/org/repo:Q4_K_M a GGUF repository on the Hugging Face hub
  /path/to/model.gguf                 a local file (in the models dir, the HF cache,
                                      or a folder listed in model_dirs)
  ollama:llama3.2:1b                  a provider prefix picks the engine

environment: LTCAI_SOCKET, LTCAI_DATA_DIR, LTCAI_CONFIG_DIR, LTCAI_LOG_LEVEL,
LTCAI_DISABLE_PLUGINS (see config/ltcai.example.toml)
"""


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model id or alias, e.g. smollm2")
    parser.add_argument("-e", "--engine", help="engine: llamacpp, mlx, ollama, vllm, lmstudio, openai…")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    common.add_argument("--socket", help="the daemon's socket (default: $XDG_RUNTIME_DIR/ltcai/ltcai.sock)")

    parser = argparse.ArgumentParser(
        prog="ltcai",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ltcai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=description or help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    serve = command(
        "serve",
        "run the daemon in the foreground",
        "Run the daemon in the foreground until SIGTERM/SIGINT (SIGHUP reloads the config).\n"
        "This is what the systemd/launchd service runs.\n\n"
        "examples:\n  ltcai serve\n  ltcai serve --http 127.0.0.1:8080   # also the OpenAI API on TCP (token: `ltcai token`)",
    )
    serve.add_argument("--http", metavar="HOST:PORT", help="also serve the OpenAI-compatible API on TCP, behind a bearer token")
    serve.add_argument("--allow-remote", action="store_true", help="allow --http on a non-loopback address")

    command(
        "token",
        "print the bearer token for the TCP API",
        "Print the bearer token OpenAI clients need for `ltcai serve --http` (made on first use).\n\n"
        "example:\n  OPENAI_API_KEY=$(ltcai token) OPENAI_BASE_URL=http://127.0.0.1:8080/v1 my-client",
    )

    command("status", "show whether the daemon runs, and what it serves")
    engines = command(
        "engines",
        "list engines: available or not, version, how to install; install one",
        "List every engine: available or not, its version, where its server comes from,\n"
        "why not and how to make it available. `install NAME` runs the engine's install\n"
        "step now, with progress, instead of during the first prepare that needs it\n"
        "(for llama.cpp: builds llama-server from the pinned llama.cpp source, ~10 minutes\n"
        "on 2 cores, once per version).\n\n"
        "examples:\n  ltcai engines\n  ltcai engines install llamacpp",
    )
    engines.add_argument("action", nargs="?", choices=["install"], help="install: install the named engine now")
    engines.add_argument("name", nargs="?", help="the engine to install (see `ltcai engines`)")

    prepare = command(
        "prepare",
        "make a model ready to chat (download, serve, smoke test)",
        "Resolve MODEL, check or install the engine, fetch the weights, start the server,\n"
        "run a smoke test, and end READY, DEGRADED or FAILED with a report.\n\n"
        "example: ltcai prepare smollm2",
    )
    _add_model(prepare)
    prepare.add_argument("--force", action="store_true", help="prepare again even if the model is ready")
    prepare.add_argument("--no-wait", action="store_true", help="start the job and print its id")
    prepare.add_argument(
        "--probe", action="store_true",
        help="measure every capability (stream, tools, json_schema, embeddings, vision), not only chat and context",
    )  # fmt: skip

    jobs = command("jobs", "list prepare jobs, or show one", "List prepare jobs, or show one with its report.")
    jobs.add_argument("job_id", nargs="?", help="a job id from the list")
    jobs.add_argument("-f", "--follow", action="store_true", help="follow the job's events until it ends")

    cancel = command("cancel", "cancel a running prepare job")
    cancel.add_argument("job_id")

    command(
        "ps",
        "list the models being served: memory, slots, when each unloads",
        "List the models being served: memory (estimated before start, and the engine\n"
        "process's resident memory now), slots busy and requests queued, last use, when an\n"
        "idle model unloads (keep_alive) and whether it is pinned; then the memory budget.",
    )

    unload = command("unload", "stop serving a model and free its memory")
    _add_model(unload)

    pin = command(
        "pin",
        "keep a loaded model loaded: never unloaded when idle, never evicted",
        "Pin a loaded model until `ltcai unpin` or a daemon restart (for a lasting pin, set\n"
        'pin = true under [models."ID"] in the config).\n\nexample: ltcai pin smollm2',
    )
    _add_model(pin)
    unpin = command("unpin", "let a pinned model unload when idle or be evicted again")
    _add_model(unpin)

    command(
        "stop",
        "stop the daemon cleanly (as SIGTERM does)",
        "Stop the daemon: it stops accepting, lets running answers finish within\n"
        "shutdown_grace_s, stops every engine process, and exits.",
    )

    profiles = command(
        "profiles",
        "list compat profiles, or show one with the layer behind each field",
        "List compat profiles, or show one: each field with the layer that set it\n"
        "(family, model, engine, user, learned).",
    )
    profiles.add_argument("key", nargs="?", help="a profile key from the list, e.g. llamacpp:smollm2-135m-instruct-q4_1")
    profiles.add_argument("--forget", action="store_true", help="delete the profile (it is rebuilt on next use)")

    chat = command(
        "chat",
        "chat with a model (one answer, or interactive)",
        "Ask MODEL one PROMPT, or start an interactive chat without one. The model is\n"
        "prepared first if it is not ready.\n\n"
        'examples:\n  ltcai chat smollm2 "What is 2+2?"\n  ltcai chat smollm2',
    )
    _add_model(chat)
    chat.add_argument("prompt", nargs="?", help="the question; omit for an interactive chat")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--no-stream", action="store_true", help="print the answer at once, not as it comes")

    logs = command(
        "logs",
        "show the daemon's log, or an engine server's output",
        "Show the daemon's log (JSON lines; also works when the daemon is down), or with\n"
        "--engine the output of that engine's running servers.\n\n"
        "examples:\n  ltcai logs -f\n  ltcai logs --engine llamacpp",
    )
    logs.add_argument("--engine", help="show this engine's server output instead")
    logs.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default 50)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")

    inspect = command(
        "inspect",
        "show how a model id resolves and its compat profile (no daemon needed)",
        "Show what ltcai would do with MODEL: the resolution (engine, ids) and the compat\n"
        "profile with the layer behind each field. Needs no daemon.\n\nexample: ltcai inspect smollm2",
    )
    _add_model(inspect)

    gguf_import = command(
        "import",
        "import a GGUF into an MLX model folder (runs here, no daemon needed)",
        "Convert a GGUF model into an MLX model folder, models/mlx/NAME in the data dir,\n"
        "ready for `ltcai prepare FOLDER --engine mlx`. It runs here, not in the daemon, in\n"
        "the MLX engine's Python ([engines.mlx] python, else the managed venv prepare installs,\n"
        "else ltcai's own), which needs mlx-lm (and mlx[cpu] off macOS). Supported: the llama\n"
        "architecture (Llama, SmolLM, TinyLlama…) in Q4_0, Q4_1, Q8_0, F16 or F32; quantized\n"
        "weights stay quantized, the tokenizer is rebuilt from the GGUF's vocabulary.\n\n"
        "examples:\n  ltcai import smollm2                           the bundled SmolLM2\n"
        "  ltcai import ~/tinyllama.Q4_0.gguf --name tinyllama",
    )
    gguf_import.add_argument("gguf", metavar="GGUF_OR_ALIAS", help="a .gguf file, or smollm2 (the bundled model)")
    gguf_import.add_argument("--name", help="the folder name under models/mlx (default: the file's name)")
    gguf_import.add_argument("--force", action="store_true", help="import again over an existing folder")

    service = command(
        "service",
        "install/uninstall the daemon as a user service (systemd or launchd)",
    )
    service.add_argument("action", choices=["install", "uninstall", "status"])
    return parser
