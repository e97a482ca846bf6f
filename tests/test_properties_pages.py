"""Property tests of the USSD page splitter and the authenticity normaliser (issue 13)."""


from hypothesis import example, given
from hypothesis import strategies as st

from gateway.text.normalise import normalise_for_check
from gateway.text.pages import GSM_PAGE, UCS2_PAGE, fits, page_cost, paginate

FOOTERS = st.sampled_from(["99. More", "99. بیشتر", "9. ادامه\u200cی متن"])
WORDS = st.one_of(
    st.text(st.sampled_from("abcdefghij{}€0123"), min_size=1, max_size=30),
    st.text(st.sampled_from("سلامپرونده‌ی۰۱۲۳"), min_size=1, max_size=30),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
)
# Menu texts: words, spaces and line breaks, now and then one very long word.
MENU_TEXT = st.lists(st.tuples(WORDS, st.sampled_from([" ", "\n", "  ", "\n\n"])),
                     max_size=60).map(lambda items: "".join(w + s for w, s in items))


def _visible(text):
    return "".join(text.split())


@given(MENU_TEXT, FOOTERS)
@example("x" * 500, "99. More")
@example("س" * 300, "99. بیشتر")
def test_every_page_fits_and_together_they_say_the_whole_text(text, footer):
    pages = paginate(text, footer)
    assert pages and all(fits(page) for page in pages), [page_cost(p) for p in pages]
    tail = "\n" + footer
    assert all(page.endswith(tail) for page in pages[:-1])
    if len(pages) == 1:
        assert pages == [text]
    bodies = [page[:-len(tail)] for page in pages[:-1]] + [pages[-1]]
    # Only whitespace at the cuts may go; nothing is lost, doubled or reordered.
    assert _visible("".join(bodies)) == _visible(text)
    for page in pages:
        cost, limit = page_cost(page)
        assert limit in (GSM_PAGE, UCS2_PAGE) and cost <= limit


ANY = st.text(st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.sampled_from(list("يىكك۱۲٣ـ\u064b\u0651\u200c\u200d\ufeff\u00a0ﻻﯾ ه\u0654.!؟«»")),
), max_size=80)


@given(ANY)
@example("xe\u200c\u0301y")               # a mark cut off from its base by an invisible
def test_the_normal_form_is_a_fixpoint(text):
    normal = normalise_for_check(text)
    assert normalise_for_check(normal) == normal


@given(ANY, st.integers(0, 80), st.sampled_from(["\u200c", "\u200d", "\u0640", "\ufeff"]))
@example("xa\u0301y", 2, "\u200c")       # between a letter and its accent (found here)
@example("\u0627\u0653", 1, "\u200d")    # alef + madda: آ either way
def test_an_invisible_character_changes_nothing(text, at, noise):
    at = min(at, len(text))
    assert normalise_for_check(text[:at] + noise + text[at:]) == normalise_for_check(text)


@given(ANY)
def test_the_normal_form_keeps_words_apart_by_single_spaces_with_alnum_ends(text):
    normal = normalise_for_check(text)
    assert "  " not in normal and normal == normal.strip()
    assert not normal or (normal[0].isalnum() and normal[-1].isalnum())
