"""The text pieces every judge shares: sentences, citation markers resolved against passages, numbers."""

from __future__ import annotations

import pytest

from shadoweval.judges.text import Citations, find_citations, numbers, passage_ref, sentences, strip_citations

PASSAGES = [
    {"id": "kb-refunds", "title": "Refunds", "text": "Refunds are paid within 5 business days."},
    {"id": "kb-warranty", "title": "Warranty", "text": "Mowers carry a 3-year warranty.",
     "url": "https://kb.example.com/warranty"},
]


@pytest.mark.parametrize("text, expected", [
    ("The R2 costs 399.99 euros, e.g. in the U.S. store [1]. It ships in 3 days [2][3]. "
     "Dr. Smith agrees.\n\n- first item\n- second item",
     ["The R2 costs 399.99 euros, e.g. in the U.S. store [1].", "It ships in 3 days [2][3].", "Dr. Smith agrees.",
      "- first item", "- second item"]),
    ("Milira sings it. [1] Next one.", ["Milira sings it. [1]", "Next one."]),
    ("Refunds take 5 days [1]. The fee is 3.5% e.g. for cards [2]. Call us!",
     ["Refunds take 5 days [1].", "The fee is 3.5% e.g. for cards [2].", "Call us!"]),
    ("Shipping is free in the U.S. for orders over $50. [1][2] Returns take 30 days.",
     ["Shipping is free in the U.S. for orders over $50. [1][2]", "Returns take 30 days."]),
    ("See https://kb.example.com/a.b/warranty. Dr. Smith agrees, i.e. it is fine.[^2] J. Doe too.",
     ["See https://kb.example.com/a.b/warranty.", "Dr. Smith agrees, i.e. it is fine.[^2]", "J. Doe too."]),
    (". Voters are chosen by editors. Next.", ["Voters are chosen by editors.", "Next."]),  # a piece that is just "."
    # Kept as they are because the offline judges' figures were measured with them (splitting after a
    # closing quote, or on every line, changes the sentences of hundreds of the labeled passages):
    ("- First point [doc2].\n- Second point\n\n## Refunds\nVersion 2.0 is out. It works!",
     ["- First point [doc2].", "- Second point", "## Refunds\nVersion 2.0 is out.", "It works!"]),
    ('He said "stop." Then left. Wait... really? Yes.', ['He said "stop." Then left.', "Wait... really?", "Yes."]),
])
def test_sentences(text, expected):
    assert sentences(text) == expected


def test_citations_are_resolved_and_unknown_sources_flagged():
    cite = lambda s, found=PASSAGES: find_citations(s, found)  # noqa: E731
    assert cite("Paid in 5 days [1, 2].").passages == (1, 2)
    assert cite("Paid in 5 days [1-2].").passages == (1, 2)
    assert cite("Paid [doc2] and ^1.").passages == (2, 1)
    assert cite("Paid [kb-warranty].").passages == (2,)  # a passage id
    assert cite("See https://kb.example.com/warranty/.").passages == (2,)  # a passage's url
    assert cite("See https://elsewhere.example.com.") == cite("No citation [sic], a [link](https://x.y).") == \
        cite("Plain.") == cite("The integral of e^{x^2} diverges.") == Citations()  # links, brackets, exponents
    missing = cite("Paid [7], [kb-nope] and [^9].")
    assert missing.passages == () and missing.unknown == ("[7]", "[kb-nope]", "[^9]") and missing
    numbered_ids = [{"id": "3", "text": "a"}, {"id": "7", "text": "b"}]  # the app's own numbers
    assert cite("A [7] [doc3].", numbered_ids).passages == (2, 1)
    assert cite("B [2].", numbered_ids).unknown == ("[2]",)
    assert [passage_ref(numbered_ids, n) for n in (1, 2)] == ["3", "7"]


def test_citation_forms_the_offline_judges_read():
    nine = [{"id": str(i), "text": f"passage {i}"} for i in range(1, 10)]
    assert find_citations("A [1][2], b [1, 3], c [doc4], d [Document 5] and ^6 [7-9].", nine).passages == \
        (1, 2, 3, 4, 5, 6, 7, 8, 9)
    # ids that are not numbers: [n] is the n-th passage
    named = [{"id": "ref1", "text": "a"}, {"id": "ref2", "text": "b"}]
    assert find_citations("Shipping is fast [2].", named).passages == (2,)
    assert [passage_ref(named, 2), passage_ref([{"text": "no id"}], 1)] == ["ref2", "1"]
    # a passage that opens with its source's URL is cited by that URL
    sourced = [{"id": "a", "text": "x"}, {"id": "b", "text": "[2] https://www.example.org/first-aid\n\nCall 9-1-1."}]
    assert find_citations("Call 9-1-1 (https://www.example.org/first-aid).", sourced).passages == (2,)


def test_markers_come_out_of_a_sentence():
    sentence = "Mowers have a 3-year warranty [2][1] (see https://kb.example.com/warranty)."
    assert find_citations(sentence, PASSAGES).strip(sentence) == "Mowers have a 3-year warranty (see)."
    assert strip_citations("It ships in 3 days [2] .") == "It ships in 3 days."
    assert strip_citations("Read more at https://x.example.com/a [doc3].") == "Read more at."


def test_numbers():
    assert numbers("It cost 1,200.50 dollars in 2019, up 3.5%.") == ["1,200.50", "2019", "3.5"]
    assert numbers("Between 1,200 and 30,000.") == ["1200", "30000"]
