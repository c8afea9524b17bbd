"""Stage 4: every text element lies in the platform safe zone, checked by box and by pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageDraw

import helpers
from shortgen import check
from shortgen.errors import FontError, TextOverflowError
from shortgen.picture import captions, draw, typeset
from shortgen.script.load import expand_targets, load_episode
from shortgen.timeline import speak_and_plan

ROOT = Path(__file__).parent.parent
SAFE = (96, 240, 984, 1480)


def inside(box, zone=SAFE) -> bool:
    return zone[0] <= box.x0 and box.x1 <= zone[2] and zone[1] <= box.y0 and box.y1 <= zone[3]


def changed_bbox(img: Image.Image, base: Image.Image):
    return ImageChops.difference(img.convert("RGB"), base.convert("RGB")).getbbox()


@pytest.fixture(scope="module")
def series_plans(tmp_path_factory):
    """Plans of every shipped part, timed by the fake engine: drawing depends on text, not on real speech."""
    from shortgen.cache import Cache
    from shortgen.testing import FakeEngine

    cache = Cache(tmp_path_factory.mktemp("cache"))
    return [speak_and_plan(load_episode(p), FakeEngine(), cache).plan for p in expand_targets([ROOT / "scripts" / "series.yaml"])]


def test_every_card_text_box_is_in_the_safe_zone(series_plans):
    for plan in series_plans:
        s = load_episode(ROOT / "scripts" / f"part{plan.part}.yaml").settings
        for seg in plan.segments:
            d = draw.draw_card(seg, plan, s)
            assert d.boxes, "nothing drawn?"
            for b in d.boxes:
                assert inside(b), f"part {plan.part} {seg.name}: {b}"
            if seg.kind == "concept":
                whats = {b.what for b in d.boxes}
                assert {"number", "name", "one_liner", "reference", "badge"} <= whats


def test_card_pixels_change_only_inside_the_safe_zone(series_plans):
    plan = series_plans[3]
    s = load_episode(ROOT / "scripts" / "part4.yaml").settings
    base = draw._base(s).image
    for seg in plan.segments:
        img = draw.draw_card(seg, plan, s).image
        x0, y0, x1, y1 = changed_bbox(img, base)
        assert SAFE[0] <= x0 and x1 <= SAFE[2] and SAFE[1] <= y0 and y1 <= SAFE[3], (seg.name, (x0, y0, x1, y1))


def test_every_caption_state_is_in_the_safe_zone_and_at_most_two_lines(series_plans):
    for plan in series_plans:
        s = load_episode(ROOT / "scripts" / f"part{plan.part}.yaml").settings
        for seg in plan.segments:
            for ci, cue in enumerate(seg.cues):
                d = captions.draw_overlay(seg, ci, 0, s)
                assert all(inside(b) for b in d.boxes), (seg.name, cue.text)
                lines = {b.y0 for b in d.boxes} and {y for _, _, y, _ in captions.layout_caption(cue.text, s, "t").words}
                assert 1 <= len(lines) <= 2, cue.text
                assert len(d.boxes) == len(cue.text.split())  # one box per whole word: none is split


def test_caption_pixels_are_inside_the_safe_zone_and_highlight_follows_the_word(series_plans):
    plan = series_plans[3]
    s = load_episode(ROOT / "scripts" / "part4.yaml").settings
    seg = plan.concepts()[0]
    card = draw.draw_card(seg, plan, s)
    n = len(seg.cues[0].text.split())
    pics = [helpers.compose(card.image, captions.draw_overlay(seg, 0, k, s).image, s) for k in range(n)]
    for pic in pics:
        x0, y0, x1, y1 = changed_bbox(pic, card.image)
        assert SAFE[0] <= x0 and x1 <= SAFE[2] and SAFE[1] <= y0 and y1 <= SAFE[3]
    # the highlight colour sits on word k's box in picture k, and nowhere else
    hl = np.array(Image.new("RGB", (1, 1), s.theme.highlight)).reshape(3)
    layout = captions.draw_overlay(seg, 0, 0, s).boxes
    for k, pic in enumerate(pics):
        a = np.asarray(pic)
        for j, b in enumerate(layout):
            region = a[b.y0 : b.y1, b.x0 : b.x1].reshape(-1, 3)
            has = bool((np.abs(region.astype(int) - hl).sum(axis=1) < 30).any())
            assert has == (j == k), (k, j)


def test_composited_overlay_equals_direct_drawing(series_plans):
    plan = series_plans[0]
    s = load_episode(ROOT / "scripts" / "part1.yaml").settings
    seg = plan.concepts()[1]
    card = draw.draw_card(seg, plan, s)
    st = next(st for st in seg.states if st.cue is not None and st.word is not None)
    via_overlay = helpers.draw_state(card, seg, st, s).image
    direct = draw._Canvas(card.image.copy())
    cue = seg.cues[st.cue]
    captions.draw_caption(direct, captions.layout_caption(cue.text, s, "t"), st.word - cue.first, s)
    assert changed_bbox(via_overlay, direct.image) is None


def test_painted_caption_states_equal_full_drawing(series_plans):
    """The renderer's fast path (each word drawn once per colour, then pasted) against drawing every
    state in full, pixel for pixel, for every caption state of two segments in each part."""
    for plan in series_plans:
        s = load_episode(ROOT / "scripts" / f"part{plan.part}.yaml").settings
        for seg in (plan.segments[0], plan.concepts()[plan.part % 5]):
            painter = assert_painted_equals_drawn(plan, seg, s)
            assert painter.cues_drawn == len(seg.cues) and None not in painter._tiles.values()


def test_released_tiles_are_let_go_and_drawn_again_when_asked(series_plans):
    """A segment's cues' tiles go when it is encoded; a word a later cue shares stays; a cue asked for
    again is drawn again, the same."""
    plan = series_plans[3]
    s = load_episode(ROOT / "scripts" / "part4.yaml").settings
    first, later = plan.concepts()[0], plan.concepts()[1]
    tiles = captions.TileCache(s)
    mine, theirs = [c.text for c in first.cues], [c.text for c in later.cues]
    tiles.warm(mine + theirs)
    before = {t: tiles.get(t, "caption") for t in mine}
    shared = {w for t in mine for w in t.split()} & {w for t in theirs for w in t.split()}
    tiles.release(mine, theirs)
    assert not set(mine) - set(theirs) & set(tiles._made)
    assert {k[0] for k in tiles._words} <= {w for t in theirs for w in t.split()}
    assert shared <= {k[0] for k in tiles._words}
    for t in mine:
        again = tiles.get(t, "caption")
        assert again is not before[t] and len(again) == len(before[t])
        for (xy, plain, lit, k, lit_xy), (xy2, plain2, lit2, k2, lit_xy2) in zip(again, before[t]):
            assert (xy, k, lit_xy) == (xy2, k2, lit_xy2)
            assert plain.tobytes() == plain2.tobytes() and lit.tobytes() == lit2.tobytes()


def test_the_background_widened_from_its_column_is_the_gradient_drawn_whole():
    def whole(w, h, top, bottom, accent):  # as it was drawn before the column was cached
        grad = Image.linear_gradient("L").resize((w, h))
        img = Image.composite(Image.new("RGB", (w, h), draw._rgb(bottom)), Image.new("RGB", (w, h), draw._rgb(top)), grad)
        ImageDraw.Draw(img).rectangle((0, 0, w, max(6, h // 160)), fill=draw._rgb(accent))
        return img

    for w, h in [(1080, 1920), (1280, 720), (540, 960), (333, 777), (2, 3)]:
        made = draw._background(w, h, "#101426", "#1c2448", "#ffb000")
        assert made.size == (w, h) and made.tobytes() == whole(w, h, "#101426", "#1c2448", "#ffb000").tobytes()
        made.putpixel((0, 0), (1, 2, 3))  # each call's own picture: the cached column is untouched
        assert draw._background(w, h, "#101426", "#1c2448", "#ffb000").getpixel((0, 0)) != (1, 2, 3)


def assert_painted_equals_drawn(plan, seg, s) -> captions.CaptionPainter:
    """Every caption state of a segment, painted from tiles, against drawing it in full, pixel for pixel."""
    _, y0, _, y1 = draw.caption_origin(s)
    card = draw.draw_card(seg, plan, s).painted().convert("RGB")
    band = card.crop((0, y0, card.width, y1))
    painter = captions.CaptionPainter(seg, s)
    for st in seg.states:
        if st.cue is None:
            continue
        hl = None if st.word is None else st.word - seg.cues[st.cue].first
        full = helpers.compose(card, captions.draw_overlay(seg, st.cue, hl, s).image, s).crop((0, y0, card.width, y1))
        assert changed_bbox(painter.paint(band, st.cue, hl), full) is None, (seg.name, st)
    return painter


def test_painter_falls_back_to_full_drawing_where_word_boxes_touch(series_plans, monkeypatch):
    plan = series_plans[3]
    s = load_episode(ROOT / "scripts" / "part4.yaml").settings
    seg = plan.concepts()[0]
    monkeypatch.setattr(captions, "CAPTION_STROKE", 40)  # strokes wider than the spaces: neighbours overlap
    _, y0, _, y1 = draw.caption_origin(s)
    card = draw.draw_card(seg, plan, s).image.convert("RGB")
    painter = captions.CaptionPainter(seg, s)
    got = painter.paint(card.crop((0, y0, card.width, y1)), 0, 1)
    assert painter._tiles[0] is None
    full = helpers.compose(card, captions.draw_overlay(seg, 0, 1, s).image, s).crop((0, y0, card.width, y1))
    assert changed_bbox(got, full) is None


def test_painting_in_ycbcr_equals_converting_the_painted_picture(series_plans, monkeypatch):
    """The renderer paints captions onto the card's converted band with converted tiles. Blending
    commutes with the affine colour conversion, so the planes match converting the RGB picture, up to
    rounding (one level); the fallback path (touching word boxes) too."""
    from helpers import yuv420
    from shortgen.picture.frames import planes420, ycc

    plan = series_plans[3]
    s = load_episode(ROOT / "scripts" / "part4.yaml").settings
    _, y0, _, y1 = draw.caption_origin(s)
    seg = plan.concepts()[2]
    card = draw.draw_card(seg, plan, s).image.convert("RGB")
    band = card.crop((0, y0, card.width, y1))

    def compare(painter_rgb, painter_ycc, states):
        worst = 0
        for cue, hl in states:
            want = yuv420(painter_rgb.paint(band, cue, hl))
            got = planes420(painter_ycc.paint(ycc(band), cue, hl))
            for w, g in zip(want, got):
                assert len(w) == len(g)
                worst = max(worst, int(np.abs(np.frombuffer(w, np.uint8).astype(int) - np.frombuffer(g, np.uint8)).max()))
        assert worst <= 1

    states = [(st.cue, None if st.word is None else st.word - seg.cues[st.cue].first) for st in seg.states if st.cue is not None]
    compare(captions.CaptionPainter(seg, s), captions.CaptionPainter(seg, s, tile_map=ycc), states)
    monkeypatch.setattr(captions, "CAPTION_STROKE", 40)  # the fallback: each state drawn in full
    painter = captions.CaptionPainter(seg, s, tile_map=ycc)
    compare(captions.CaptionPainter(seg, s), painter, states[:3])
    assert painter._tiles[states[0][0]] is None


def test_a_caption_too_long_for_the_band_names_the_segment_every_time(series_plans):
    s = load_episode(ROOT / "scripts" / "part4.yaml").settings
    for where in ("a.yaml:3:5: 'One'", "b.yaml:9:5: 'Two'"):  # the layout is cached; the message is not
        with pytest.raises(TextOverflowError) as e:
            captions.layout_caption("Pneumonoultramicroscopicsilicovolcanoconiosis" * 3, s, where)
        assert str(e.value).startswith(f"{where}: caption: text too long for its box")


def test_long_name_shrinks_and_too_long_fails_naming_the_segment(series_plans):
    import dataclasses

    plan = series_plans[0]
    s = load_episode(ROOT / "scripts" / "part1.yaml").settings
    seg = plan.concepts()[0]
    longer = dataclasses.replace(seg, name="Stochastic Gradient Descent With Momentum")
    d = draw.draw_card(longer, plan, s)
    assert all(inside(b) for b in d.boxes)
    absurd = dataclasses.replace(seg, name="Supercalifragilisticexpialidocious " * 6)
    with pytest.raises(TextOverflowError) as e:
        draw.draw_card(absurd, plan, s)
    assert "name: text too long" in str(e.value) and seg.source in str(e.value)


def test_missing_font_is_a_clear_error(series_plans, tmp_path):
    plan = series_plans[0]
    s = load_episode(ROOT / "scripts" / "part1.yaml").settings.with_(fonts_dir=tmp_path)
    with pytest.raises(FontError) as e:
        draw.draw_card(plan.segments[1], plan, s)
    assert str(tmp_path) in str(e.value) and "font not found" in str(e.value)


def test_thumbnail_and_cover(series_plans):
    for plan in series_plans:
        s = load_episode(ROOT / "scripts" / f"part{plan.part}.yaml").settings
        t = draw.draw_thumbnail(plan, s)
        assert t.image.size == (1280, 720)
        assert sum(b.what == "list" for b in t.boxes) == 10  # five numbers, five names
        assert all(0 <= b.x0 and b.x1 <= 1280 and 0 <= b.y0 and b.y1 <= 720 for b in t.boxes)
        c = draw.draw_cover(plan, s)
        assert c.image.size == (1080, 1920) and all(inside(b) for b in c.boxes)


# ---- emoji, symbols and scripts the theme's font lacks: drawn from the chain, or refused by name ---------


def _tiny_cjk_font(path: Path) -> Path:
    """A font made here with one glyph, 中 (U+4E2D), a filled box: a stand-in for a creator's CJK font."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    fb = FontBuilder(1000, isTTF=True)
    fb.setupGlyphOrder([".notdef", "zhong"])
    fb.setupCharacterMap({0x4E2D: "zhong"})
    glyphs = {}
    for name, box in ((".notdef", (100, 0, 500, 700)), ("zhong", (80, -50, 920, 800))):
        pen = TTGlyphPen(None)
        x0, y0, x1, y1 = box
        pen.moveTo((x0, y0))
        for corner in ((x0, y1), (x1, y1), (x1, y0)):
            pen.lineTo(corner)
        pen.closePath()
        glyphs[name] = pen.glyph()
    fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics({".notdef": (600, 100), "zhong": (1000, 80)})
    fb.setupHorizontalHeader(ascent=880, descent=-120)
    fb.setupNameTable({"familyName": "TestCJK", "styleName": "Regular"})
    fb.setupOS2(sTypoAscender=880, sTypoDescender=-120, usWinAscent=880, usWinDescent=120)
    fb.setupPost()
    fb.save(str(path))
    return path


def _tofu(settings, text: str, size: int = 80) -> Image.Image:
    """What Roboto alone draws for text it lacks: its .notdef box."""
    f = typeset._freetype(typeset.font_path(settings, "bold").primary, size)
    im = Image.new("L", (400, 200))
    ImageDraw.Draw(im).text((10, 10), text, font=f, fill=255)
    return im


def test_emoji_and_symbols_are_drawn_from_the_fallback_fonts_not_as_tofu():
    from shortgen.settings import Settings

    s = Settings()
    chain = typeset._font(typeset.font_path(s, "bold"), 80)
    for ch in "🚀🤖✓★→":
        ((run, font),) = chain.runs(ch)
        assert font is not chain.primary and run == ch
        im = Image.new("L", (400, 200))
        typeset.draw_runs(ImageDraw.Draw(im), (10, 10), ch, chain, 255)
        assert im.getbbox() and ImageChops.difference(im, _tofu(s, ch)).getbbox(), ch
    # joiners and variation selectors are part of an emoji, not characters of their own
    assert [t for t, _ in chain.runs("A\u2764\ufe0f B")] == ["A", "\u2764", " B"]


def test_a_character_no_font_has_is_refused_naming_it_and_its_field(tmp_path):
    from shortgen.cache import Cache
    from shortgen.testing import FakeEngine

    p = tmp_path / "ep.yaml"
    p.write_text(
        "series: S\npart: 1\nsegments:\n  - name: Attention 中\n    narration: Attention. Look here.\n"
        "    one_liner: one\n    reference: ref\n"
    )
    m = speak_and_plan(load_episode(p), FakeEngine(), Cache(tmp_path / "c"))
    problems = check.fit_problems(m)
    assert problems and problems[0].startswith(f"{p}:4:11: segments[0].name: no font has the character '中' (U+4E2D)")
    # the creator names a font that has it, relative to the script: then it is drawn
    _tiny_cjk_font(tmp_path / "cjk.ttf")
    p.write_text(p.read_text().replace("segments:", "settings:\n  fonts: [cjk.ttf]\nsegments:"))
    ep = load_episode(p)
    m = speak_and_plan(ep, FakeEngine(), Cache(tmp_path / "c"))
    assert check.fit_problems(m) == []
    card = draw.draw_card(m.plan.segments[1], m.plan, ep.settings)
    name_box = next(b for b in card.boxes if b.what == "name")
    assert name_box.x1 - name_box.x0 > 300


def test_a_missing_fonts_entry_is_a_schema_style_error(tmp_path):
    p = tmp_path / "ep.yaml"
    p.write_text(
        "series: S\npart: 1\nsettings:\n  fonts: [nope.ttf]\nsegments:\n  - name: A\n"
        "    narration: Hello.\n    one_liner: one\n    reference: ref\n"
    )
    with pytest.raises(Exception) as e:
        load_episode(p)
    assert str(e.value) == f"{p}:4:11: settings.fonts[0]: no such font file: nope.ttf"


def test_captions_with_emoji_paint_as_they_draw(tmp_path):
    from shortgen.cache import Cache
    from shortgen.testing import FakeEngine

    p = tmp_path / "ep.yaml"
    p.write_text(
        "series: S\npart: 1\nsegments:\n  - name: Rockets 🚀\n"
        "    narration: Launch 🚀 fast, check ✓ twice. Done ★ now.\n    one_liner: one ✨\n    reference: ref\n"
    )
    ep = load_episode(p)
    m = speak_and_plan(ep, FakeEngine(), Cache(tmp_path / "c"))
    assert check.fit_problems(m) == []
    assert_painted_equals_drawn(m.plan, m.plan.segments[1], ep.settings)


def test_the_cmap_reader_agrees_with_fonttools(tmp_path):
    from fontTools.ttLib import TTFont

    fonts = [*sorted((ROOT / "src" / "shortgen" / "assets" / "fonts").glob("*.ttf")), _tiny_cjk_font(tmp_path / "cjk.ttf")]
    for f in fonts:
        assert typeset._read_cmap(f.read_bytes()) == set(TTFont(str(f), lazy=True).getBestCmap()), f
