"""Context extraction: the retrieved passages found in requests, stored with their exchanges."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
import sqlite_utils

from shadoweval import judges
from shadoweval.cli.mockllm import MockLLM, ThreadedServer
from shadoweval.core.context import contexts_of, extract_contexts
from shadoweval.core.migrations import MIGRATIONS
from shadoweval.core.redact import Redactor
from shadoweval.core.settings import ContextSettings, SettingsError, load_settings
from shadoweval.core.store import Store
from shadoweval.core.types import Exchange, new_id
from shadoweval.judges.runner import plan, run_plan
from shadoweval.proxy import capture
from shadoweval.proxy.sse import Capture

from .conftest import SHARED_DATA, running_proxy

REFUNDS = "Refunds are issued to the original payment method within 5 business days of approval."
PLANS = "The Pro plan costs $20 per seat per month, billed annually; the Team plan costs $35."
EXPORT = "Admins can export all workspace data as CSV from Settings > Data > Export."


def chat(*messages: tuple[str, str], **extra) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": r, "content": c} for r, c in messages], **extra}


def found(request: dict | None, **kw) -> list[tuple[str, str | None, str]]:
    return [(p["id"], p["title"], p["text"]) for p in extract_contexts(request, **kw) or []]


# -- layouts in messages ----------------------------------------------------------------------------


def test_numbered_passages_keep_their_numbers_and_titles():
    system = ("You are a helpful assistant. Answer the user's question using only the documents below. "
              "Cite the documents you use as [n].\n\nDocuments:\n"
              f"[1] Title: Refund policy\n\n{REFUNDS}\nRefunds for annual plans are prorated.\n\n"
              f"[2] {PLANS}\n\n[3] Title: Data export\n{EXPORT}")
    request = chat(("system", system), ("user", "How long do refunds take?"))
    assert found(request) == [
        ("1", "Refund policy", REFUNDS + "\nRefunds for annual plans are prorated."),
        ("2", None, PLANS),
        ("3", "Data export", EXPORT),
    ]
    assert {p["source"] for p in extract_contexts(request)} == {"system"}


def test_document_ids_the_question_and_stray_markers():
    # [doc N] with ids rather than a count, in the user turn, followed by the question
    user = (f"Documents:\n[doc 4821] {REFUNDS}\n\n[doc 17] {PLANS}\n\n[doc 930] {EXPORT}\n\n"
            "Question: can I get my money back? My login is ann@example.com.")
    assert found(chat(("system", "Answer from the documents, cite [doc N]."), ("user", user))) == [
        ("4821", None, REFUNDS), ("17", None, PLANS), ("930", None, EXPORT)]
    # a line starting with [7] inside passage 1 is text: the numbers go on 1, 2
    user = f"Context:\n[1] {REFUNDS}\n[7] is the footnote of the policy.\n[2] {PLANS}"
    assert found(chat(("user", user))) == [("1", None, REFUNDS + "\n[7] is the footnote of the policy."),
                                           ("2", None, PLANS)]


@pytest.mark.parametrize("marker", ["Document {n}:", "**Document {n}:**", "Source [{n}]:", "[doc{n}]",
                                    "[Document {n}]", "### Passage {n}\n", "Doc #{n} -"])
def test_named_markers(marker):
    body = "\n\n".join(f"{marker.format(n=n)} {text}" for n, text in enumerate([REFUNDS, PLANS], 1))
    request = chat(("system", "Be concise."), ("user", f"{body}\n\nQuestion: what does Pro cost?"))
    assert found(request) == [("1", None, REFUNDS), ("2", None, PLANS)]


def test_bare_numbers_need_a_hint_that_they_are_documents():
    hinted = chat(("system", f"Answer from these search results:\n(1) {REFUNDS}\n(2) {PLANS}"))
    assert found(hinted) == [("1", None, REFUNDS), ("2", None, PLANS)]
    # at the top of a user message, a system prompt that speaks of documents is the hint
    top = chat(("system", "Use the numbered documents in the user's message."), ("user", f"[1] {REFUNDS}\n[2] {PLANS}"))
    assert found(top) == [("1", None, REFUNDS), ("2", None, PLANS)]
    # numbered instructions and R output are not documents
    assert found(chat(("system", "Rules:\n(1) Be brief.\n(2) Be kind."), ("user", "hi"))) == []
    assert found(chat(("user", "Why does R print this?\n[1] 0.5 0.25\n[2] 0.125"))) == []


def test_xml_elements():
    docs = (f'<documents>\n<document id="kb-12" title="Refunds">{REFUNDS}</document>\n'
            f"<document id='kb-40'>\n{PLANS}\n</document>\n</documents>")
    assert found(chat(("system", f"Answer from the documents.\n{docs}"), ("user", "refunds?"))) == [
        ("kb-12", "Refunds", REFUNDS), ("kb-40", None, PLANS)]
    # Anthropic's layout: index, source and document_content
    anthropic = ('<documents>\n<document index="1">\n<source>refunds.md</source>\n'
                 f"<document_content>\n{REFUNDS}\n</document_content>\n</document>\n"
                 f'<document index="2"><source>plans.md</source><document_content>{PLANS}</document_content>'
                 "</document>\n</documents>\nAnswer the question.")
    assert found(chat(("user", anthropic))) == [("1", "refunds.md", REFUNDS), ("2", "plans.md", PLANS)]
    # <passage>, <doc>, <source> without ids are numbered in order; <context> may hold numbered passages
    assert found(chat(("user", f"<passage>{REFUNDS}</passage>\n<doc>{PLANS}</doc>\n<source>{EXPORT}</source>"))) == [
        ("1", None, REFUNDS), ("2", None, PLANS), ("3", None, EXPORT)]
    assert found(chat(("user", f"<context>\n[1] {REFUNDS}\n[2] {PLANS}\n</context>\n\nhow long?"))) == [
        ("1", None, REFUNDS), ("2", None, PLANS)]
    assert found(chat(("user", f"<context>{REFUNDS}</context>\n<question>refunds?</question>"))) == [
        ("1", None, REFUNDS)]


def test_headings_and_blocks():
    blank = chat(("user", f"Context:\n{REFUNDS}\n\n{PLANS}\n\nQuestion: how long do refunds take?"))
    assert found(blank) == [("1", None, REFUNDS), ("2", None, PLANS)]
    ruled = chat(("system", f"Retrieved passages:\n{REFUNDS}\n---\n{PLANS}\nSecond line of the plans page.\n---\n"
                            f"{EXPORT}\n\nAnswer briefly.\n"), ("user", "hi"))
    assert [t for _, _, t in found(ruled)][:2] == [REFUNDS, PLANS + "\nSecond line of the plans page."]
    titled = chat(("system", f"You are a support bot.\n\n## Sources\n\n### Refund policy\n{REFUNDS}\n\n"
                             f"### Plans\n{PLANS}\n\n## Question\nhow long?"))
    assert found(titled) == [("1", "Refund policy", REFUNDS), ("2", "Plans", PLANS)]
    inline = chat(("user", "Use the following pieces of retrieved context to answer the question.\n"
                           f"Question: how long? \nContext: {REFUNDS}\n\n{PLANS} \nAnswer:"))
    assert found(inline) == [("1", None, REFUNDS), ("2", None, PLANS)]


def test_langchain_and_llamaindex_default_prompts():
    llamaindex = ("Context information is below.\n---------------------\n"
                  f"file_path: docs/refunds.md\n\n{REFUNDS}\n\nfile_path: docs/plans.md\n\n{PLANS}\n"
                  "---------------------\nGiven the context information and not prior knowledge, answer the query.\n"
                  "Query: how long do refunds take?\nAnswer: ")
    assert found(chat(("user", llamaindex))) == [("1", "docs/refunds.md", REFUNDS), ("2", "docs/plans.md", PLANS)]
    langchain = ("Use the following pieces of context to answer the user's question. \nIf you don't know the "
                 "answer, just say that you don't know, don't try to make up an answer.\n----------------\n"
                 f"{REFUNDS}\n\n{PLANS}")
    assert found(chat(("system", langchain), ("user", "how long?"))) == [("1", None, REFUNDS), ("2", None, PLANS)]


def test_plain_conversations_have_no_contexts():
    assert extract_contexts(chat(("system", "You are a helpful assistant."), ("user", "What is shadow mode?"))) is None
    assert extract_contexts(chat(("user", "Write a haiku.\n\n1. about spring\n2. about rain"))) is None
    assert extract_contexts(None) is None and extract_contexts({"model": "m"}) is None


def test_assistant_messages_are_never_searched():
    request = chat(("user", "What do refunds take?"), ("assistant", f"Documents:\n[1] {REFUNDS}"), ("user", "thanks"))
    assert extract_contexts(request) is None


def test_parts_developer_role_and_turns_with_their_own_numbers():
    request = {"model": "m", "messages": [
        {"role": "developer", "content": [{"type": "text", "text": f"Documents:\n[1] {REFUNDS}\n[2] {PLANS}"}]},
        {"role": "user", "content": [{"type": "text", "text": "And exports?"},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": "Refunds take 5 days [1]."},
        {"role": "user", "content": f"Documents:\n[1] {EXPORT}\n[2] {PLANS}\n\nQuestion: and exports?"},
    ]}
    # [2] repeats unchanged (kept once); [1] differs: the latest turn's keeps the id the answer cites
    assert found(request) == [("1~1", None, REFUNDS), ("2", None, PLANS), ("1", None, EXPORT)]


# -- tool results and the Responses API -----------------------------------------------------------------


def test_tool_and_function_results():
    request = {"model": "m", "messages": [
        {"role": "user", "content": "What does Pro cost?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "search_kb", "arguments": '{"q": "pro"}'}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": json.dumps({"results": [PLANS]})},
        {"role": "tool", "tool_call_id": "call_def", "content": [{"type": "text", "text": EXPORT}]},
        {"role": "function", "name": "get_policy", "content": REFUNDS},
        {"role": "tool", "tool_call_id": "call_empty", "content": ""},
    ]}
    got = extract_contexts(request)
    assert [(p["id"], p["title"], p["source"]) for p in got] == [
        ("call_abc", "search_kb", "tool"), ("call_def", None, "tool"), ("get_policy", "get_policy", "tool")]
    assert json.loads(got[0]["text"]) == {"results": [PLANS]} and got[2]["text"] == REFUNDS


def test_responses_api_inputs():
    request = {
        "model": "gpt-4.1-mini",
        "instructions": f"Answer from the documents.\n\nDocuments:\n[1] {REFUNDS}",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": f"Sources:\n[2] {PLANS}\n\nQuestion: cost?"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": f"[3] {EXPORT}"}]},
            {"type": "function_call", "call_id": "fc_1", "name": "lookup", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "fc_1", "output": EXPORT},
        ],
    }
    got = extract_contexts(request)
    assert [(p["id"], p["title"], p["text"], p["source"]) for p in got] == [
        ("1", None, REFUNDS, "system"), ("2", None, PLANS, "user"), ("fc_1", "lookup", EXPORT, "tool")]
    assert found({"model": "m", "input": f"Context:\n{REFUNDS}\n\nQuestion: how long?"}) == [("1", None, REFUNDS)]


# -- supplied by the app: header and field; settings -----------------------------------------------------


def test_header_wins_then_field_then_messages():
    request = chat(("user", f"Documents:\n[1] {EXPORT}\n\nQuestion: cost?"),
                   metadata={"contexts": json.dumps([{"id": "kb-40", "title": "Plans", "text": PLANS}])})
    with_field = ContextSettings(field="metadata.contexts")
    header = json.dumps([REFUNDS, {"id": "p", "text": PLANS}])
    assert found(request, settings=with_field, header=header) == [("1", None, REFUNDS), ("p", None, PLANS)]
    assert [p["source"] for p in extract_contexts(request, settings=with_field, header=header)] == ["header"] * 2
    assert found(request, settings=with_field) == [("kb-40", "Plans", PLANS)]
    assert found(request) == [("1", None, EXPORT)]  # no field configured: the messages
    # a header or field that is not usable falls through to the next source
    assert found(request, settings=with_field, header="[not json") == [("kb-40", "Plans", PLANS)]
    assert found(request, settings=ContextSettings(field="metadata.nope"), header="[]") == [("1", None, EXPORT)]


def test_field_shapes():
    def field(value, path="extra.docs"):
        return found({"model": "m", "messages": [], "extra": {"docs": value}}, settings=ContextSettings(field=path))

    assert field([REFUNDS, PLANS]) == [("1", None, REFUNDS), ("2", None, PLANS)]
    assert field([{"id": 7, "title": "Plans", "content": PLANS}]) == [("7", "Plans", PLANS)]
    assert field(json.dumps([REFUNDS])) == [("1", None, REFUNDS)]
    assert field(REFUNDS) == [("1", None, REFUNDS)]  # plain text: one passage
    assert field([{"title": "no text"}, 3, None]) == []
    assert field([REFUNDS, PLANS], path="extra.docs.1") == [("1", None, PLANS)]


def test_header_sent_as_utf8():
    # the proxy reads header bytes as latin-1; a client may have sent UTF-8
    text = "Les remboursements prennent 5 jours ouvrés."
    raw = json.dumps([text], ensure_ascii=False).encode().decode("latin-1")
    assert found(None, header=raw) == [("1", None, text)]


def test_custom_patterns_come_first():
    settings = ContextSettings(patterns=(r"(?ms)^<<(?P<id>\w+)\|(?P<title>[^>]*)>>\n(?P<text>.*?)\n<<end>>",))
    user = f"<<kb12|Refunds>>\n{REFUNDS}\n<<end>>\n<<kb40|Plans>>\n{PLANS}\n<<end>>\nDocuments:\n[1] {EXPORT}"
    assert found(chat(("user", user)), settings=settings) == [("kb12", "Refunds", REFUNDS), ("kb40", "Plans", PLANS)]
    assert found(chat(("user", f"Documents:\n[1] {EXPORT}")), settings=settings) == [("1", None, EXPORT)]


def test_caps_and_off_switch():
    user = "Documents:\n" + "\n".join(f"[{n}] passage number {n}" for n in range(1, 31))
    assert len(found(chat(("user", user)))) == 30
    assert [i for i, _, _ in found(chat(("user", user)), settings=ContextSettings(max_passages=5))] == list("12345")
    capped = found(chat(("user", user)), settings=ContextSettings(max_chars=40))
    assert [t for _, _, t in capped] == ["passage number 1", "passage number 2", "passage "]
    assert extract_contexts(chat(("user", user)), settings=ContextSettings(enabled=False), header='["x"]') is None


def test_contexts_of_prefers_what_was_stored():
    request = chat(("user", f"Context:\n{REFUNDS}\n\nQuestion: how long?"))
    stored = Exchange(new_id(), time.time(), "/v1/chat/completions", request,
                      contexts=[{"id": "a", "title": None, "text": "stored", "source": "header"}])
    assert [p["text"] for p in contexts_of(stored)] == ["stored"]
    older = Exchange(new_id(), time.time(), "/v1/chat/completions", request)  # stored before extraction
    assert [p["text"] for p in contexts_of(older)] == [REFUNDS]
    assert contexts_of(older, settings=ContextSettings(enabled=False)) == []
    assert contexts_of(Exchange(new_id(), time.time(), "/v1/chat/completions", None)) == []


@pytest.mark.parametrize("section, message", [
    ({"header": "x-context"}, "x-shadoweval-"),
    ({"header": "x-shadoweval-key"}, "x-shadoweval-"),
    ({"patterns": ["(?P<body>.*)"]}, "named group 'text'"),
    ({"patterns": ["(unclosed"]}, "not a valid regular expression"),
    ({"max_passages": 0}, "context.max_passages"),
])
def test_bad_context_settings(section, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(None, overrides={"context": section}, env={})
    assert load_settings(None, overrides={"context": {"header": "X-ShadowEval-Docs"}}, env={}).context.header == (
        "x-shadoweval-docs")


def test_pathological_prompts_stay_linear():
    # every layout meets text built to make careless regular expressions backtrack
    n = 100_000
    texts = ["<document>" * (n // 10), "\nDocument " * (n // 10), "Context:\n" * (n // 9), "---\n" * (n // 4),
             "\n[" * (n // 2), ("\n[" + "9" * 6) * (n // 8), "<document " + "a" * n + ">x</document>",
             "<context>" * 5000 + "x" + "</context>" * 5000, "Use the following context\n---\n" * (n // 30)]
    for text in texts:
        t0 = time.perf_counter()
        extract_contexts(chat(("system", text), ("user", text)))
        assert time.perf_counter() - t0 < 2.0, text[:40]


# -- stored with the exchange -----------------------------------------------------------------------


def test_store_round_trip_redacts_contexts_like_the_request(tmp_path):
    store = Store(tmp_path / "s.db", flush_interval_ms=5, redactor=Redactor())
    store.start()
    try:
        request = chat(("system", f"Documents:\n[1] {REFUNDS} Write to billing@acme.example.\n[2] {PLANS}"))
        contexts = extract_contexts(request) + [
            {"id": "h", "title": "Escalation", "text": "Call +1 415 555 0100 for refunds.", "source": "header"}]
        ex = Exchange(new_id(), time.time(), "/v1/chat/completions", request, contexts=contexts)
        plain = Exchange(new_id(), time.time(), "/v1/chat/completions", chat(("user", "hi")))
        assert store.submit(ex) and store.submit(plain) and store.flush()
        got = store.get_exchange(ex.id)[0]
        assert [p["text"] for p in got.contexts] == [f"{REFUNDS} Write to [EMAIL].", PLANS, "Call [PHONE] for refunds."]
        assert "[EMAIL]" in got.request["messages"][0]["content"]
        assert store.get_exchange(plain.id)[0].contexts is None
    finally:
        store.stop()


def test_an_extraction_failure_still_stores_the_exchange(monkeypatch, caplog):
    def boom(*a, **kw):
        raise RecursionError("nested too deep")

    monkeypatch.setattr(capture, "extract_contexts", boom)
    body = json.dumps(chat(("user", f"Context:\n{REFUNDS}"))).encode()
    answer = Capture(200, "application/json", None, [json.dumps({"choices": []}).encode()], [1.0])
    ex, out = capture.production_records(capture.ProductionCapture(new_id(), "/v1/chat/completions", time.time(),
                                                                   0.0, body, None, answer, t_end=1.0))
    assert ex.contexts is None and ex.request["messages"] and out.status == "ok"
    assert "could not extract contexts" in caplog.text


def test_migration_adds_the_column_to_an_existing_store(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    for m in MIGRATIONS[:3]:  # a store made before contexts existed, with one exchange in it
        m(db)
    db["_migrations"].create({"name": str, "applied_at": str}, pk="name")
    db["_migrations"].insert_all({"name": m.__name__, "applied_at": "2026-01-01T00:00:00Z"} for m in MIGRATIONS[:3])
    request = chat(("user", f"Context:\n{REFUNDS}\n\nQuestion: how long?"))
    db["exchanges"].insert({"id": "01OLD", "created_at": "2026-01-01T00:00:00.000Z", "route": "/v1/chat/completions",
                            "model": "m", "request_json": json.dumps(request), "tags_json": "{}", "stream": 0,
                            "status": "ok", "http_status": 200})
    db.conn.close()
    store = Store(path)
    assert store.get_exchange("01OLD")[0].contexts is None  # read before the writer migrated it
    store.start()
    try:
        old = store.get_exchange("01OLD")[0]
        assert old.contexts is None and [p["text"] for p in contexts_of(old)] == [REFUNDS]
        assert "contexts_json" in sqlite_utils.Database(path)["exchanges"].columns_dict
    finally:
        store.stop()


def test_through_the_proxy_with_the_openai_client(production, tmp_path):
    prod_mock, prod = production
    cand = MockLLM(name="cand")
    system = f"Answer from the documents and cite them.\n\nDocuments:\n[1] {REFUNDS}\n\n[2] {PLANS}"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "How long do refunds take?"}]
    with ThreadedServer(cand) as cs, running_proxy(
        tmp_path, prod.url, candidates=[{"name": "cand", "model": "c", "base_url": cs.url + "/v1"}],
        context={"field": "metadata.contexts"},
    ) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="k")
        from_messages = client.chat.completions.with_raw_response.create(model="m", messages=messages)
        header = json.dumps([{"id": "kb-40", "title": "Plans", "text": PLANS}])
        from_header = client.chat.completions.with_raw_response.create(
            model="m", messages=messages, extra_headers={"x-shadoweval-context": header})
        from_field = client.responses.with_raw_response.create(
            model="m", input="What does Pro cost?", metadata={"contexts": json.dumps([PLANS])})
        assert proxy.store.flush()

        def stored(raw):
            return proxy.store.get_exchange(raw.headers["x-shadoweval-exchange-id"])[0].contexts

        # what the app supplied is stored at once; the prompt is searched off the proxy's path
        assert stored(from_header) == [{"id": "kb-40", "title": "Plans", "text": PLANS, "source": "header"}]
        assert stored(from_field) == [{"id": "1", "title": None, "text": PLANS, "source": "field"}]
        assert stored(from_messages) is None
        eid = from_messages.headers["x-shadoweval-exchange-id"]
        shown = httpx.get(f"{proxy.root}/shadoweval/exchanges/{eid}").json()["exchange"]["contexts"]
        assert [(p["id"], p["text"]) for p in shown] == [("1", REFUNDS), ("2", PLANS)]  # found for display
        # ...and found and saved before the exchange is first judged
        asyncio.run(run_plan(proxy.store, plan(proxy.store, [judges.create("checks")], context=proxy.settings.context)))
        assert [(p["id"], p["text"], p["source"]) for p in stored(from_messages)] == [
            ("1", REFUNDS, "system"), ("2", PLANS, "system")]
        assert stored(from_header)[0]["id"] == "kb-40"  # supplied passages are not replaced
        # the header reached neither production nor the candidate
        assert len(prod_mock.requests) == 3
        assert all("x-shadoweval-context" not in r.headers for r in prod_mock.requests)
        deadline = time.monotonic() + 10
        while len(cand.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(cand.requests) == 3 and all("x-shadoweval-context" not in r.headers for r in cand.requests)


# -- real RAG requests ------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", ["mtrag_responses.jsonl", "attribution_claims.jsonl", "replay_rag_requests.jsonl"])
def test_real_rag_requests_give_back_their_passages(name):
    """Each record's `contexts` are the passages its request shows the model as `[1]`..`[n]`. The
    request prints a record's title on the line after the marker, and a passage whose text begins
    with `Title: X` gives title X; either way title and text together must be the record's."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip("shared data not present")
    rows = [json.loads(line) for line in path.open()]
    wrong = []
    for row in rows:
        want = [_norm(f"{c['title'] or ''} {c['text']}") for c in row.get("contexts") or []]
        got = extract_contexts(row["request"]) or []
        texts = [_norm(f"Title: {p['title']} {p['text']}" if p["title"] else p["text"]) for p in got]
        if texts != want or [p["id"] for p in got] != [str(i) for i in range(1, len(got) + 1)]:
            wrong.append(row["id"])
    # measured: 237/237, 1198/1198 and 507/507 rows (130 of the 507 have no passages at all)
    assert not wrong, f"{len(rows) - len(wrong)}/{len(rows)} rows match; first misses: {wrong[:5]}"


def test_real_prompts_without_retrieval_rarely_yield_passages():
    path = SHARED_DATA / "replay_chat_requests.jsonl"
    if not path.exists():
        pytest.skip("shared data not present")
    rows = [json.loads(line) for line in path.open()]
    with_passages = [r["id"] for r in rows if extract_contexts(r["request"])]
    # measured: 4 of 3,757 (real prompts with a `Context:` section, or a peer's list of sources)
    assert len(with_passages) <= 0.002 * len(rows), with_passages
