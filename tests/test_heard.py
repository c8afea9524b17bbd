"""What the recogniser hears against the text: phones from the dictionary, paired along an edit path, and
the two rules (a stretch of the text not heard where the take gives it no time; a stretch heard that the
text lacks). Real recognition of human takes is tested in test_takes.py."""

from __future__ import annotations

import numpy as np

from shortgen.speech import heard

MIDDLE = "Too large and it jumps over, too small and it crawls."
TEXT = f"The learning rate sets the step size. {MIDDLE} Like walking down a foggy hill."


def timed(text: str, per_word: float = 0.3, start: float = 0.5) -> list[tuple[str, float, float]]:
    """`text` as a recogniser would return it, heard perfectly at a steady pace."""
    words = [w.strip(".,").lower() for w in text.split()]
    return [(w, start + i * per_word, start + (i + 1) * per_word) for i, w in enumerate(words)]


def test_text_phones_spell_words_as_the_dictionary_does_and_guess_the_rest():
    ph = heard.text_phones("Adam's L2 deserv'd ReLU")
    assert [p for p, k in ph if k == 0][:2] == ["AE", "D"]
    assert [p for p, k in ph if k == 1] == ["EH", "L", "T", "UW"]  # "L2": el two
    assert [p for p, k in ph if k == 2][-1] == "D"  # deserved
    assert {p for p, k in ph if k == 3} == {"*"}  # not in the dictionary: phones that pair with anything


def test_pair_matches_equal_phones_fully_and_phones_of_a_class_by_half():
    ma, mb, to_b = heard.pair(["F", "AO", "R", "T", "IY"], ["F", "AO", "R", "D", "IY", "N"])
    assert list(ma) == [1, 1, 1, 0.5, 1] and mb[-1] == 0 and list(to_b[:3]) == [0, 1, 2]


def test_an_empty_text_or_take_is_judged_without_failing():
    assert heard.mismatch("", heard.judge("", [])) is None
    assert heard.judge(TEXT, []).said == 0.0


def test_a_text_the_dictionary_mostly_does_not_know_is_not_judged():
    """Another language: what an English recogniser hears in it says nothing of what was said."""
    text = "Descenso por gradiente: un algoritmo que minimiza la pérdida paso a paso."
    h = heard.judge(text, timed("the sentence so bread and real gone minimum a la pair the dark pass so pass so"))
    assert h.known < heard.KNOWN_MIN and heard.mismatch(text, h) is None, h


def test_a_take_heard_as_its_text_passes():
    h = heard.judge(TEXT, timed(TEXT))
    assert h.said == 1.0 and h.extra == 1.0 and heard.mismatch(TEXT, h) is None


def test_a_sentence_with_no_time_in_the_take_is_a_skip_naming_its_words():
    h = heard.judge(TEXT, timed(TEXT.replace(MIDDLE + " ", "")))
    why = heard.mismatch(TEXT, h)
    assert why and "'Too large and it jumps over, too small ...' is not heard" in why, (why, h)


def test_words_misheard_where_the_take_spends_their_time_are_not_a_skip():
    """A voice the recogniser follows badly: the middle sentence heard as two grunts, over its whole time."""
    words = timed(TEXT)
    a, b = len(TEXT.split(MIDDLE)[0].split()), len((TEXT.split(MIDDLE)[0] + MIDDLE).split())
    mid = (words[a][1] + words[b - 1][2]) / 2
    h = heard.judge(TEXT, [*words[:a], ("uh", words[a][1], mid), ("uh", mid, words[b - 1][2]), *words[b:]])
    assert h.said < heard.SAID_MIN and h.gap_time > heard.GAP_TIME_MAX and heard.mismatch(TEXT, h) is None, h


def test_a_sentence_the_text_lacks_is_an_addition_naming_when():
    words = timed(TEXT)
    extra = timed("Paris is the capital of France and its river is the Seine", start=0)  # 12 words, 3.6 s
    at = 7  # after "size."
    shift = len(extra) * 0.3
    take = (
        words[:at]
        + [(w, s + words[at][1], e + words[at][1]) for w, s, e in extra]
        + [(w, s + shift, e + shift) for w, s, e in words[at:]]
    )
    h = heard.judge(TEXT, take)
    why = heard.mismatch(TEXT, h)
    assert why and "added?" in why and abs(h.extra_at_s - words[at][1]) < 0.6, (why, h)


def test_a_take_is_heard_alike_whatever_was_heard_before():
    """Each take is normalised by its own mean: what the recogniser heard last does not change it."""
    rng = np.random.default_rng(1)
    t = np.arange(48000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)
    noise = (0.2 * rng.standard_normal(48000)).astype(np.float32)
    first = heard.recognise(tone, 16000)
    heard.recognise(noise, 16000)
    assert heard.recognise(tone, 16000) == first


def test_a_skip_beside_a_long_pause_is_a_skip_when_the_take_says_where_it_sounds():
    """A reader breathes where a line was cut: on the clock the pause is time given to the missing words;
    the take's sounding windows say it is none."""
    pause = 3.0
    a = len(TEXT.split(MIDDLE)[0].split())
    cut = timed(TEXT.replace(MIDDLE + " ", ""))
    words = cut[:a] + [(w, s + pause, e + pause) for w, s, e in cut[a:]]
    voiced = np.zeros(int(words[-1][2] * 100) + 50, bool)
    for _, s, e in words:
        voiced[int(s * 100) : int(e * 100)] = True
    assert heard.judge(TEXT, words).gap_time > heard.GAP_TIME_MAX  # the clock alone
    h = heard.judge(TEXT, words, voiced)
    why = heard.mismatch(TEXT, h)
    assert h.gap_time < heard.GAP_TIME_MAX and why and "'Too large and it jumps over" in why, (why, h)


def test_a_long_passage_left_out_counts_where_the_rest_is_heard_well():
    import dataclasses

    base = heard.judge(TEXT, timed(TEXT))
    long_cut = dataclasses.replace(base, places=4, covered=0.64, heard_elsewhere=0.78)
    assert heard.understood(long_cut)
    # the same gaps, with the rest heard no better than espeak's voices are: the recogniser is lost
    assert not heard.understood(dataclasses.replace(long_cut, heard_elsewhere=0.6))
    assert not heard.understood(dataclasses.replace(long_cut, places=5))
