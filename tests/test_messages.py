"""One rule for a message's text: the question (capture), the transcript (exports) and the passage
search (context) take the same parts of a message and differ only in how they join them."""

from __future__ import annotations

from shadoweval.core.context import extract_contexts
from shadoweval.core.messages import BLOCKS, QUESTION, TURN, last_user_text, message_text, user_texts
from shadoweval.datasets.evalsets.conversation import conversation

PARTS = [
    {"type": "text", "text": "Where is"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    {"text": "my invoice?"},  # no type: read as text, as OpenAI's own SDK types default it
    {"type": "refusal", "refusal": "no"},
    "sent as a bare string",
    {"type": "input_text", "text": 42},  # not text
]


def test_message_text_takes_the_text_parts_and_joins_them_by_use():
    assert message_text(PARTS, QUESTION) == "Where is my invoice? sent as a bare string"
    assert message_text(PARTS, TURN) == "Where is\nmy invoice?\nsent as a bare string"
    assert message_text(PARTS, BLOCKS) == "Where is\n\nmy invoice?\n\nsent as a bare string"
    assert message_text("plain") == "plain"
    assert message_text(None) == message_text({"text": "x"}) == message_text([]) == ""
    assert message_text([{"type": "output_text", "text": "a"}, {"type": "input_text", "text": "b"}]) == "a\nb"


def test_question_and_transcript_read_the_same_parts():
    chat = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                         {"role": "user", "content": PARTS}]}
    responses = {"input": [{"role": "user", "content": PARTS}]}
    for request in (chat, responses):
        (*_, last) = conversation(request)
        assert last.role == "user"
        assert last.text.replace(TURN, QUESTION) == last_user_text(request)
        assert last_user_text(request) == "Where is my invoice? sent as a bare string"


def test_the_question_of_plain_requests_is_unchanged():
    # stored questions (eval items, reports) keep their text: parts joined by one space, as before
    assert last_user_text({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Where is my"}, {"type": "text", "text": "invoice?"}]}]}) == "Where is my invoice?"
    assert last_user_text({"input": "Hi"}) == "Hi"
    assert last_user_text({"input": [{"role": "user", "content": "Hi"}]}) == "Hi"
    assert last_user_text({"messages": [{"role": "assistant", "content": "x"}]}) == ""


def test_passage_search_reads_each_text_part_as_its_own_block():
    # a numbered passage list split over two parts: the part boundary ends a passage, so the second
    # part's passage does not run into the first's
    request = {"messages": [{"role": "system", "content": [
        {"type": "text", "text": "Documents:\n[1] Refunds take five working days after approval."},
        {"text": "[2] The Pro plan costs twenty dollars a month per seat."}]},
        {"role": "user", "content": "How long do refunds take?"}]}
    found = extract_contexts(request, search_messages=True)
    texts = [c["text"] for c in found or []]
    assert any(t.startswith("Refunds take five working days") and "Pro plan" not in t for t in texts), texts
    assert any("Pro plan costs twenty dollars" in t for t in texts), texts


def test_user_texts_are_every_user_turn_oldest_first():
    request = {"messages": [{"role": "system", "content": "Docs"}, {"role": "user", "content": "Order 4471."},
                            {"role": "assistant", "content": "Noted, order 4471."},
                            {"role": "user", "content": [{"type": "text", "text": "When"}, {"type": "text", "text": "?"}]}]}
    assert user_texts(request) == "Order 4471." + TURN + "When" + QUESTION + "?"
    assert user_texts({"input": "Hi"}) == "Hi"
    assert user_texts({"input": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                 {"role": "user", "content": "c"}]}) == "a" + TURN + "c"
    assert user_texts({"messages": [{"role": "assistant", "content": "x"}]}) == ""
    assert user_texts({}) == ""


def test_the_last_user_text_is_the_last_of_the_user_texts():
    """One walker: a user turn without text (content null) is no turn for either, and a request whose
    messages hold no user turn falls back to the Responses API `input` for both."""
    request = {"messages": [{"role": "user", "content": "First."}, {"role": "user", "content": None}]}
    assert last_user_text(request) == "First."
    assert user_texts(request) == "First."
    request = {"messages": [{"role": "system", "content": "Docs"}], "input": "Hi"}
    assert last_user_text(request) == user_texts(request) == "Hi"
    request = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}]}]}
    assert user_texts(request).split(TURN)[-1] == last_user_text(request) == "b"
