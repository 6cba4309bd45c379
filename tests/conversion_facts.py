"""What each client-protocol x upstream-protocol pair keeps, maps, approximates or drops.

This table is the single source for two things: the expectations of ``test_matrix.py`` (so a
claim here that the gateway does not honour fails a test) and the matrix in
``docs/conversion.md`` (regenerate with ``python -m tests.conversion_facts``; the test
``test_conversion_doc_is_current`` fails when the page and this table differ).
"""

from __future__ import annotations

from typing import Final

PROTOCOLS: Final = ("cc", "am", "rs")
NAMES: Final = {"cc": "OpenAI Chat", "am": "Anthropic Messages", "rs": "OpenAI Responses"}

# feature -> (title, how it is checked)
FEATURES: Final = {
    "text": ("Text answer", "test_matrix[...-text]"),
    "tools": ("Parallel tool calls (ids, names, arguments, own index)", "test_matrix[...-tools]"),
    "tool_results": (
        "Tool-result turn (call/result ids stay paired)",
        "test_tool_result_turn_and_image_reach_upstream",
    ),
    "images": ("Image input (base64)", "test_tool_result_turn_and_image_reach_upstream"),
    "thinking": ("Reasoning text", "test_matrix[...-thinking]"),
    "proof": (
        "Reasoning proof (Anthropic signature / Responses encrypted_content)",
        "test_matrix[...-thinking]",
    ),
    "stop_sequence": ("Which stop sequence ended the turn", "test_matrix[...-stop]"),
    "max_tokens": ("Output-cap stop", "test_matrix[...-length]"),
    "usage": (
        "Usage with prompt-cache reads and writes, in the client's own fields",
        "every test_matrix case",
    ),
    "cache_markers": (
        'Prompt-cache breakpoints (`cache_control`; `prompt_cache = "auto"` for clients without them)',
        "test_matrix_cache_params.py (Chat markers, auto breakpoints, Anthropic clients' markers)",
    ),
    "prompt_cache_key": ("`prompt_cache_key`", "test_prompt_cache_key_reaches_openai_upstreams"),
    "logprobs_n_audio": (
        "Log probabilities, `n` > 1, audio output",
        "test_parameters_only_a_verbatim_upstream_honours",
    ),
    "stream_error": (
        "Upstream failure mid-stream -> the client's own terminal error event",
        "test_mid_stream_failure",
    ),
    "client_tools": (
        "Client-run tools that are not functions (Responses `custom` apply_patch, `tool_search`, "
        "`local_shell`; Chat `custom`): offer, call, streamed input, history",
        "test_matrix_agents: test_codex_client_tools_*, test_codex_history_*, test_chat_custom_tool_*",
    ),
    "hosted_tools": (
        "Hosted tool (web search) offered beside client tools; dropped = left out and named in "
        "`x-routecodex-dropped`",
        "test_matrix_agents: test_codex_client_tools_*, test_claude_code_web_search_*",
    ),
    "server_tool_history": (
        "Server-tool history (`web_search_call`, `server_tool_use`, `web_search_tool_result`)",
        "test_matrix_agents: test_codex_history_*, test_claude_code_server_tool_history_*",
    ),
}

# Features that exist only in some client protocols: the other clients cannot send them.
_CLIENTS: Final = {
    "client_tools": ("rs", "cc"),
    "hosted_tools": ("rs", "am"),
    "server_tool_history": ("rs", "am"),
}


def status(feature: str, client: str, upstream: str) -> str:
    """``kept`` (same information, same form), ``mapped`` (same information, another form),
    ``approximated`` (the nearest thing the client protocol has), ``dropped``, ``refused``
    (a 400 naming the parameter) or ``—`` (the client's protocol has no such thing)."""
    if client not in _CLIENTS.get(feature, PROTOCOLS):
        return "—"
    if feature == "hosted_tools":
        return "kept" if client == upstream else "dropped"
    if feature == "server_tool_history":
        return "kept" if client == upstream else "approximated"  # as text the model can read
    if feature == "cache_markers":
        if client == upstream and client != "rs":
            return "kept"
        if upstream == "am":
            # Chat markers become Anthropic's; Responses has none, so "auto" places them.
            return "mapped" if client == "cc" else "approximated"
        # OpenAI upstreams cache prefixes by themselves and take no markers.
        return "—" if client == "rs" else "dropped"
    if feature == "prompt_cache_key":
        if client == "am":
            return "—"
        if upstream == "am":
            return "dropped"  # Anthropic caches by breakpoints, placed as above
        return "kept" if client == upstream else "mapped"
    if feature == "logprobs_n_audio":
        if client == "am":
            return "—"
        return "kept" if client == upstream else "refused"
    if feature == "proof":
        if client == upstream and client != "cc":
            return "kept"
        if client == "rs" and upstream == "am":
            return "mapped"  # signature carried inside encrypted_content, restored on replay
        return "dropped"
    if feature == "stop_sequence":
        if (client, upstream) in (("am", "am"), ("cc", "cc")):
            return "kept"  # Chat upstreams tell it the vLLM/SGLang way, passed through as is
        if (client, upstream) == ("am", "cc"):
            return "mapped"
        return "approximated"  # a plain natural stop
    return "kept" if client == upstream else "mapped"


def render_markdown() -> str:
    lines = [
        "| feature | "
        + " | ".join(f"{NAMES[c]} client ← {NAMES[u]} upstream" for c in PROTOCOLS for u in PROTOCOLS)
        + " | checked by |",
        "|---|" + "---|" * (len(PROTOCOLS) ** 2) + "---|",
    ]
    for feature, (title, check) in FEATURES.items():
        cells = [status(feature, c, u) for c in PROTOCOLS for u in PROTOCOLS]
        lines.append(f"| {title} | " + " | ".join(cells) + f" | `{check}` |")
    return "\n".join(lines) + "\n"


BEGIN: Final = "<!-- matrix:begin (generated by python -m tests.conversion_facts) -->\n"
END: Final = "<!-- matrix:end -->\n"


def update_doc(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + BEGIN + render_markdown() + END + tail


if __name__ == "__main__":
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "conversion.md"
    doc.write_text(update_doc(doc.read_text()))
    print(f"updated {doc}")
