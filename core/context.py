"""Find the retrieved passages a request gave the model, so that judges and reports can see them.

RAG apps put what they retrieved into the prompt in a handful of layouts: numbered passages
(`[1] ...`, `[doc2]`, `Document 3:`), XML-ish elements (`<document id="a">...</document>`), a
`Context:` heading followed by blocks, or tool results. Apps that know their passages can send
them instead, in the `x-shadoweval-context` header or a request field. What the app supplies is
read in the store's writer thread; searching the prompt runs in the judges' process, before an
exchange is first judged (`judges/runner.py`), and what it finds is stored with the exchange. It is
plain string work all the same:
a few regular expressions per message, each linear in the text (no nested quantifiers). Patterns
that look at line starts begin with a literal newline rather than `^`, which lets the regex engine
skip from newline to newline (six times faster than trying `^` at every character); the text they
scan is given a leading newline for that.

A passage is `{"id": str, "title": str | None, "text": str, "source": str}`; `source` says where
it was found: system, user, tool, field or header. Numbered passages keep their number as id, so
that a citation `[2]` in an answer points at passage "2".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from .messages import BLOCKS, message_text
from .settings import ContextSettings
from .types import Exchange

Passage = dict[str, Any]
Found = tuple[str | None, str | None, str]  # (id, title, text) as a layout finds them

_DEFAULTS = ContextSettings()
_SEARCHED = {"system": "system", "developer": "system", "user": "user"}

# Words that say "what follows is retrieved material", above a bare `[1]` or `(1)` marker.
_HINT = re.compile(r"\b(?:contexts?|documents?|docs|passages?|sources?|search results?|retrieved|excerpts?|"
                   r"snippets?|knowledge|references?|citations?|cite)\b", re.I)

# Numbered passages at line starts: `[1]`, `[doc1]`, `[Document 2]`, `(3)`, `Document 4:`,
# `Source [5]:`, optionally as a markdown heading or in bold. A `:` glued to the bracket is part of
# the marker; anything after a space is the passage's own text.
_WORDS = r"doc(?:ument)?|source|passage|context|ref(?:erence)?|snippet|chunk|excerpt|result"
_MARKER = re.compile(
    r"\n[ \t]*(?:#{1,6}[ \t]+)?(?:\*\*)?"
    rf"(?:\[[ \t]*(?:(?P<bword>{_WORDS})[ \t_#-]*)?(?P<b>\d{{1,6}})[ \t]*\](?:\*\*)?(?::(?:\*\*)?)?[ \t]*"
    r"|\((?P<p>\d{1,6})\):?[ \t]*"
    rf"|(?P<word>{_WORDS})[ \t]*(?:\[(?P<wb>\d{{1,6}})\]|#?(?P<w>\d{{1,6}}))(?:\*\*)?[ \t]*"
    r"(?:[:.)\]–—-](?:\*\*)?(?:[ \t]+|$)|$))",
    re.I | re.M,
)
# Where retrieved material gives way to the rest of the prompt: a `Question:`-style line (or a
# markdown heading naming one), a horizontal rule, a closing tag.
_LABELS = (r"question|query|user(?:'s)? (?:question|query|message|request)|answer|final answer|helpful answer|"
           r"instructions?|task|conversation|chat history|history|input|output|response")
_END = re.compile(
    rf"\n[ \t]*(?:(?P<label>#{{1,6}}[ \t]+(?:\*\*)?(?:{_LABELS})\b|(?:\*\*)?(?:{_LABELS})(?:\*\*)?[ \t]*:)"
    r"|(?P<rule>-{3,}|={3,}|\*{3,})[ \t]*$|</)",
    re.I | re.M,
)
_RULE = re.compile(r"[ \t]*(?:-{3,}|={3,}|\*{3,}|_{3,})[ \t]*")
_RULE_LINE = re.compile(r"\n[ \t]*(?:-{3,}|={3,}|\*{3,}|_{3,})[ \t]*$", re.M)
# A line that introduces context fenced by a rule below it: "Use the following pieces of context ..."
_INTRO = re.compile(r"\b(?:following|below|these|given)\b.*\b(?:context|documents|passages|sources|excerpts)\b"
                    r"|\bcontext information\b", re.I)
_TITLE = re.compile(r"\A\s*(?:\*\*)?title(?:\*\*)?[ \t]*:[ \t]*(?:\*\*)?(?P<t>[^\n]*)", re.I)

# XML-ish elements. A passage-level element holding others (`<context><document>..`) is a container;
# one holding `<document_content>` (Anthropic's layout) keeps its text there. Elements are found
# by their opening tag, then the closing tag is looked for once: a lazy `<tag>.*?</tag>` would
# rescan the rest of the text from every opening tag that is never closed.
_PASSAGE_TAGS = ("document", "doc", "passage", "chunk", "snippet", "search_result", "context", "source")
_CONTENT_TAGS = ("document_content", "content", "text", "page_content")
_OPEN: dict[tuple[str, ...], re.Pattern[str]] = {
    tags: re.compile(rf"<({'|'.join(tags)})\b([^<>]*)>", re.I) for tags in (_PASSAGE_TAGS, _CONTENT_TAGS)}
_CLOSE = {tag: re.compile(rf"</{tag}[ \t]*>", re.I) for tag in _PASSAGE_TAGS + _CONTENT_TAGS}
_INNER = re.compile(r"<(?:document|doc|passage|chunk|snippet|search_result|context)\b[^<>]*>", re.I)
_META = re.compile(r"<(?P<tag>title|source|url)\b[^<>]*>(?P<body>[^<]*)</(?P=tag)[ \t]*>", re.I)
_ATTR = re.compile(r"""(?<![\w-])([\w-]+)[ \t]*=[ \t]*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")

# A heading over a block of retrieved material: `Context:`, `## Documents`, `Retrieved passages:`,
# `Context information is below.` (LlamaIndex), with the first block possibly on the same line.
_HEADING = re.compile(
    r"\n[ \t]*(?:#{1,6}[ \t]+)?(?:\*\*)?(?:(?:retrieved|relevant|provided|reference|supporting|search)[ \t]+)?"
    r"(?:context(?:[ \t]+information)?|documents?|sources?|passages?|search[ \t]+results|excerpts?|snippets?|"
    r"knowledge(?:[ \t]+base)?)(?:\*\*)?"
    r"(?:[ \t]*:(?:\*\*)?[ \t]*(?P<rest>[^\n]*)|[ \t]+(?:is|are)[ \t]+below[ \t]*[:.]?[ \t]*|[ \t]*)$",
    re.I | re.M,
)
_BLOCK_SEP = re.compile(r"\n(?:[ \t]*(?:-{3,}|={3,}|\*{3,}|_{3,})|[ \t]*#{2,6}(?P<title>[^\n]*))[ \t]*$", re.M)
_BLANK = re.compile(r"\n[ \t]*\n")
# A block made only of `key: value` lines: the metadata LlamaIndex prints above each node.
_META_BLOCK = re.compile(r"[a-z_]{1,30}: [^\n]{1,300}(?:\n[a-z_]{1,30}: [^\n]{1,300}){0,9}")


def extract_contexts(
    request: Mapping[str, Any] | None, *, settings: ContextSettings | None = None, header: str | None = None,
    search_messages: bool = True,
) -> list[Passage] | None:
    """The passages the request gave the model, or None when there are none.

    The header wins, then the configured field, then tool results and the layouts found in
    system, developer and user messages (never in assistant messages), in message order.
    `search_messages=False` looks only at what the app supplied (header, field): the store's writer
    does that much, and leaves searching the prompt to the judges' process."""
    s = settings or _DEFAULTS
    if not s.enabled:
        return None
    found: list[Passage] = []
    if header:
        found = _supplied(_header_text(header), "header")
    if not found and s.field and isinstance(request, Mapping):
        found = _supplied(_dig(request, s.field), "field")
    if not found and search_messages and isinstance(request, Mapping):
        found = _unique_ids(list(_from_request(request, s.patterns)))
    return _capped(found, s) or None


def contexts_of(exchange: Exchange, *, settings: ContextSettings | None = None) -> list[Passage]:
    """The passages stored with an exchange or, for rows stored before extraction existed (or with it
    off), the passages found in its request now."""
    if exchange.contexts is not None:
        return exchange.contexts
    if settings is not None and not settings.enabled:
        return []
    return extract_contexts(exchange.request, settings=settings) or []


# -- supplied by the app ----------------------------------------------------------------------------


def _header_text(value: str) -> str:
    # ASGI headers arrive as bytes decoded as latin-1; a client may have sent UTF-8.
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _dig(request: Mapping[str, Any], path: str) -> Any:
    value: Any = request
    for key in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _supplied(value: Any, source: str) -> list[Passage]:
    """A list of strings or `{id, title, text}` objects, or a JSON string of either."""
    if isinstance(value, str):
        value = value.strip()
        if value[:1] in ("[", "{", '"'):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                return []
    if isinstance(value, (str, Mapping)):
        value = [value]
    if not isinstance(value, list):
        return []
    out = []
    for i, item in enumerate(value, 1):
        if isinstance(item, Mapping):
            text = next((t for k in ("text", "content", "page_content", "snippet")
                         if isinstance(t := item.get(k), str)), None)
            pid, title = item.get("id"), item.get("title")
        else:
            text, pid, title = item, None, None
        if isinstance(text, str) and text.strip():
            out.append(_passage(str(pid) if pid is not None else str(i), title if isinstance(title, str) else None,
                                text.strip(), source))
    return out


# -- found in the request -----------------------------------------------------------------------------


def _from_request(request: Mapping[str, Any], patterns: tuple[str, ...]) -> Iterator[Passage]:
    """Tool results and the passages in searched messages, chat and Responses API alike, in order."""
    items: list[tuple[str, Any]] = []  # (source, text) or ("tool", (id, title, text))
    names: dict[str, str] = {}  # tool call id -> function name, for tool results' titles
    instructions = request.get("instructions")
    if isinstance(instructions, str):
        items.append(("system", instructions))
    messages = request.get("messages")
    if not isinstance(messages, list):
        messages = request.get("input")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
    for m in messages if isinstance(messages, list) else ():
        if not isinstance(m, Mapping):
            continue
        role, kind = m.get("role"), m.get("type")
        if role == "assistant":
            for call in m.get("tool_calls") or ():
                if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                    names[str(call.get("id"))] = str(call["function"].get("name"))
        elif kind == "function_call":
            names[str(m.get("call_id"))] = str(m.get("name"))
        elif role == "tool" or kind == "function_call_output":
            cid = str(m.get("tool_call_id") or m.get("call_id") or "")
            items.append(("tool", (cid or None, names.get(cid), message_text(m.get("content", m.get("output")), BLOCKS))))
        elif role == "function":
            name = m.get("name") if isinstance(m.get("name"), str) else None
            items.append(("tool", (name, name, message_text(m.get("content"), BLOCKS))))
        elif role in _SEARCHED and kind in (None, "message"):
            items.append((_SEARCHED[role], message_text(m.get("content"), BLOCKS)))
    system = [text for src, text in items if src == "system"]

    def hinted() -> bool:  # asked only for a bare `[1]` at the very top of a message
        return any(_HINT.search(text) for text in system)

    for source, item in items:
        if source == "tool":
            cid, title, text = item
            found: list[Found] = [(cid, title, text)]
        else:
            found = _from_text(item, hinted, patterns)
        cleaned = [(pid, *_clean(text, title)) for pid, title, text in found]
        for n, (pid, text, title) in enumerate([c for c in cleaned if c[1]], 1):
            yield _passage(pid or str(n), title, text, source)


def _from_text(text: str, hinted: Callable[[], bool], patterns: tuple[str, ...]) -> list[Found]:
    """The first layout that finds anything wins: custom patterns, XML-ish elements, numbered
    passages, headings."""
    if not text or text.isspace():
        return []
    for p in patterns:
        found = [(m.groupdict().get("id"), m.groupdict().get("title"), m["text"] or "")
                 for m in re.compile(p).finditer(text)]
        if found:
            return found
    if "<" in text and (found := _xml(text)):
        return found
    text = "\n" + text
    return _numbered(text, hinted) or _headed(text)


def _elements(text: str, tags: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    """(tag, attributes, body) of each element named in `tags`, outermost first, in order."""
    opening, unclosed = _OPEN[tags], set()
    pos = 0
    while (m := opening.search(text, pos)) is not None:
        tag = m[1].lower()
        close = None if tag in unclosed else _CLOSE[tag].search(text, m.end())
        if close is None:  # never closed from here on: later openings of this tag are not either
            unclosed.add(tag)
            pos = m.end()
            continue
        yield tag, m[2], text[m.end():close.start()]
        pos = close.end()


def _xml(text: str, depth: int = 0) -> list[Found]:
    out: list[Found] = []
    for tag, attr_text, body in _elements(text, _PASSAGE_TAGS):
        attrs = {k.lower(): a or b or c for k, a, b, c in _ATTR.findall(attr_text[:2000])}
        pid = next((attrs[k] for k in ("id", "index", "doc_id", "key") if attrs.get(k)), None)
        title = next((attrs[k] for k in ("title", "source", "name") if attrs.get(k)), None)
        content = next(_elements(body, _CONTENT_TAGS), None)
        if content is None and depth < 3 and _INNER.search(body):  # a container: look inside
            out.extend(_xml(body, depth + 1))
            continue
        meta = {mm["tag"].lower(): mm["body"].strip() for mm in _META.finditer(body)}
        title = title or meta.get("title") or meta.get("source") or meta.get("url")
        if content is not None:
            out.append((pid, title, content[2]))
        elif tag == "context" and (numbered := _numbered("\n" + body, lambda: True)):
            out.extend(numbered)
        else:
            out.append((pid, title, _META.sub("", body) if meta else body))
    return out


def _marker(m: re.Match[str]) -> tuple[re.Match[str], str, bool, int]:
    """A marker with its style (`[`, `[doc`, `(`, `doc`, `sou`...), whether it names a document itself
    (then no hint is needed) and its number."""
    if m["b"]:
        word = (m["bword"] or "")[:3].lower()
        return m, "[" + word, bool(word), int(m["b"])
    if m["p"]:
        return m, "(", False, int(m["p"])
    return m, m["word"][:3].lower(), True, int(m["wb"] or m["w"])


def _line_above(text: str, pos: int) -> tuple[str, int]:
    """The last non-blank line before the newline at `pos` ("" at the top), and where it starts."""
    while pos > 0:
        start = text.rfind("\n", 0, pos)
        line = text[start + 1:pos]
        if line.strip():
            return line, start
        pos = start
    return "", 0


def _numbered(text: str, hinted: Callable[[], bool]) -> list[Found]:
    marks = [_marker(m) for m in _MARKER.finditer(text)]
    for first in marks:
        # A bare `[1]` or `(1)` counts when the line above it (or, at the very top of a message, a
        # system message) speaks of documents: numbered lists of instructions stay what they are.
        above = "" if first[2] else _line_above(text, first[0].start())[0]
        if first[2] or (_HINT.search(above) if above else hinted()):
            break
    else:
        return []
    same = [mk for mk in marks if mk[1] == first[1] and mk[0].start() >= first[0].start()]
    chain = [first]
    for mk in same[1:]:  # numbers that go on 1, 2, 3: a stray `[7]` inside a passage is text
        if mk[3] == chain[-1][3] + 1:
            chain.append(mk)
    if len(chain) == 1 or 2 * len(chain) < len(same):  # ids, not a count: `[doc 4821]`, `[doc 17]`
        chain = same
    out: list[Found] = []
    for i, (m, _, _, number) in enumerate(chain):
        end = chain[i + 1][0].start() if i + 1 < len(chain) else _end(text, m.end(), numbered=True)
        out.append((str(number), None, text[m.end():end]))
    return out


def _end(text: str, pos: int, *, numbered: bool = False) -> int:
    """Where the retrieved material that starts at `pos` gives way to the rest of the prompt. After
    numbered passages a rule ends it too, but a `Question:`-style label only after a blank line:
    passages themselves often hold `Answer:` lines (FAQs), while prompts set their sections apart.
    Under a heading, rules separate blocks instead."""
    for m in _END.finditer(text, pos):
        if m["rule"] is not None:
            if numbered:
                return m.start()
        elif not numbered or m["label"] is None or not text[text.rfind("\n", 0, m.start()) + 1:m.start()].strip():
            return m.start()
    return len(text)


def _headed(text: str) -> list[Found]:
    """Blocks under `Context:`-style headings, and between rules that follow a line about context
    (LangChain's and LlamaIndex's default prompts)."""
    out: list[Found] = []
    for start, end in _regions(text):
        meta = None
        for title, block in _blocks(text[start:end]):
            if _META_BLOCK.fullmatch(block.strip()):  # `file_path: a.md` above its node (LlamaIndex)
                meta = block.strip()
                continue
            if meta is not None and block.strip():
                title = title or meta.partition("\n")[0].partition(":")[2].strip()
                meta = None
            out.append((None, title, block))
    return out


def _regions(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each region of retrieved material, in order, not overlapping. One pass:
    headings and rules inside a region are part of it, never the start of another."""
    pos = 0
    heading, rule = _HEADING.search(text), _RULE_LINE.search(text)
    while heading is not None or rule is not None:
        if heading is not None and heading.start() < pos:
            heading = _HEADING.search(text, pos)
        elif rule is not None and rule.start() < pos:
            rule = _RULE_LINE.search(text, pos)
        elif heading is not None and (rule is None or heading.start() < rule.start()):
            first = text.rfind("\n", 0, _skip_blank(text, heading.end()))  # the next non-blank line
            fence = None if heading["rest"] else _RULE_LINE.match(text, first)
            if fence is not None:  # `Context information is below.` then a rule (LlamaIndex)
                start, end, pos = _fenced(text, fence.end())
            else:  # blocks up to the next `Question:`; `Context: the first block starts here`
                start = heading.start("rest") if heading["rest"] else heading.end()
                end = pos = _end(text, heading.end())
            yield start, end
        elif rule is not None:
            above, where = _line_above(text, rule.start())
            # "Use the following pieces of context..." on one of the two lines above the rule
            if _INTRO.search(above[:400]) or (above and _INTRO.search(_line_above(text, where)[0][:400])):
                start, end, pos = _fenced(text, rule.end())
                yield start, end
            else:
                pos = rule.end()


def _fenced(text: str, start: int) -> tuple[int, int, int]:
    """From just after a rule line to the next one (or the end), and where to go on: after it."""
    close = _RULE_LINE.search(text, start)
    return (start, close.start(), close.end()) if close else (start, len(text), len(text))


def _skip_blank(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _blocks(region: str) -> Iterator[tuple[str | None, str]]:
    """Blocks separated by `---` or `### Title` lines, or else by blank lines."""
    region = "\n" + region
    seps = list(_BLOCK_SEP.finditer(region))
    if not seps:
        for block in _BLANK.split(region):
            yield None, block
        return
    title, start = None, 0
    for sep in seps:
        yield title, region[start:sep.start()]
        title, start = (sep["title"] or "").strip() or None, sep.end()
    yield title, region[start:]


def _clean(text: str, title: str | None) -> tuple[str, str | None]:
    """Trim, drop trailing rules, lift a `Title:` first line into the title."""
    text = text.strip()
    end = len(text)
    while (cut := text.rfind("\n", 0, end)) >= 0 and _RULE.fullmatch(text, cut + 1, end):
        end = cut
    text = text[:end].rstrip()
    if _RULE.fullmatch(text):
        return "", title
    t = _TITLE.match(text)
    if t is not None and t["t"].strip():
        title, text = title or t["t"].strip().strip("*").strip(), text[t.end():].strip()
    return text, title.strip() if isinstance(title, str) and title.strip() else None


def _passage(pid: str, title: str | None, text: str, source: str) -> Passage:
    return {"id": pid, "title": title, "text": text, "source": source}


def _unique_ids(passages: list[Passage]) -> list[Passage]:
    """Identical repeats dropped; when two passages share an id (each turn numbering its own
    documents from 1), the latest keeps it, since that is what the answer cites, and earlier ones
    become `id~1`, `id~2`..."""
    out: list[Passage] = []
    where: dict[str, int] = {}
    renamed: dict[str, int] = {}
    for p in passages:
        prev = where.get(p["id"])
        if prev is not None:
            if out[prev]["text"] == p["text"]:
                continue
            renamed[p["id"]] = renamed.get(p["id"], 0) + 1
            out[prev] = {**out[prev], "id": f"{p['id']}~{renamed[p['id']]}"}
        where[p["id"]] = len(out)
        out.append(p)
    return out


def _capped(passages: list[Passage], s: ContextSettings) -> list[Passage]:
    out = []
    budget = s.max_chars
    for p in passages[:s.max_passages]:
        if budget <= 0:
            break
        if len(p["text"]) > budget:
            p = {**p, "text": p["text"][:budget]}
        out.append(p)
        budget -= len(p["text"])
    return out
