"""The console's SVG charts: the exact text of a line chart and a bar chart, round axis maxima, escaping, the empty
chart, and the inputs refused."""

import pytest

from stream.admin.charts import Series, bar_chart, line_chart, nice_max

HEAD = ('<line class="axis" x1="56" y1="24" x2="56" y2="172" stroke="#57606a"/>\n'
        '<line class="axis" x1="56" y1="172" x2="628" y2="172" stroke="#57606a"/>\n'
        '<text class="tick" x="50" y="176.0" text-anchor="end" font-size="11">0</text>\n')


def test_a_line_chart_is_exactly_this_svg():
    svg = line_chart("Members of <b>", ["03-10", "03-11", "03-12"], [Series("existing", (2, 3, 0))])
    assert svg == (
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-line" viewBox="0 0 640 200" width="640" '
        'height="200" role="img" aria-label="Members of &lt;b&gt;">\n'
        "<title>Members of &lt;b&gt;</title>\n" + HEAD +
        '<text class="tick" x="50" y="28.0" text-anchor="end" font-size="11">5</text>\n'
        '<rect x="64" y="6" width="10" height="10" fill="#0b5cad"/><text class="legend" x="78" y="15" '
        'font-size="11">existing</text>\n'
        '<polyline class="series" fill="none" stroke="#0b5cad" stroke-width="2" '
        'points="64.0,112.8 342.0,83.2 620.0,172.0"/>\n'
        '<circle cx="64.0" cy="112.8" r="3" fill="#0b5cad"><title>existing 03-10: 2</title></circle>\n'
        '<circle cx="342.0" cy="83.2" r="3" fill="#0b5cad"><title>existing 03-11: 3</title></circle>\n'
        '<circle cx="620.0" cy="172.0" r="3" fill="#0b5cad"><title>existing 03-12: 0</title></circle>\n'
        '<text class="label" x="64.0" y="192" text-anchor="start" font-size="11">03-10</text>\n'
        '<text class="label" x="342.0" y="192" text-anchor="middle" font-size="11">03-11</text>\n'
        '<text class="label" x="620.0" y="192" text-anchor="end" font-size="11">03-12</text>\n'
        "</svg>")


def test_a_bar_chart_is_exactly_this_svg():
    svg = bar_chart("Dead letters per hour", ["10h"], [Series("dead letters", (4,))])
    assert svg == (
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-bar" viewBox="0 0 640 200" width="640" '
        'height="200" role="img" aria-label="Dead letters per hour">\n'
        "<title>Dead letters per hour</title>\n" + HEAD +
        '<text class="tick" x="50" y="28.0" text-anchor="end" font-size="11">5</text>\n'
        '<rect x="64" y="6" width="10" height="10" fill="#0b5cad"/><text class="legend" x="78" y="15" '
        'font-size="11">dead letters</text>\n'
        '<rect class="bar" x="116.4" y="53.6" width="451.2" height="118.4" fill="#0b5cad"><title>dead letters 10h: 4'
        "</title></rect>\n"
        '<text class="label" x="342.0" y="192" text-anchor="middle" font-size="11">10h</text>\n'
        "</svg>")


def test_several_series_share_the_axis_and_each_has_its_colour_and_legend():
    svg = line_chart("Members", ["a", "b"], [Series("existing", (2, 3)), Series("entering", (2, 1)),
                                             Series("exiting", (0, 1))])
    assert svg.count("<polyline") == 3 and svg.count("<circle") == 6
    assert '<text class="tick" x="50" y="102.0" text-anchor="end" font-size="11">2.5</text>' not in svg
    assert '<text class="tick" x="50" y="28.0" text-anchor="end" font-size="11">5</text>' in svg
    assert ['stroke="#0b5cad"', 'stroke="#1a7f37"', 'stroke="#b3261e"'] == [
        s for s in ('stroke="#0b5cad"', 'stroke="#1a7f37"', 'stroke="#b3261e"') if s in svg]
    assert '<text class="legend" x="378" y="15" font-size="11">exiting</text>' in svg
    bars = bar_chart("Events", ["00h", "01h"], [Series("events", (1200, 0)), Series("dead", (10, 20))])
    assert bars.count('<rect class="bar"') == 4
    assert '<text class="tick" x="50" y="102.0" text-anchor="end" font-size="11">1,000</text>' in bars
    assert '<text class="tick" x="50" y="28.0" text-anchor="end" font-size="11">2,000</text>' in bars


def test_round_maxima():
    assert [nice_max(v) for v in (0, 1, 3, 11, 20, 21, 250, 1000, 1001)] == [1, 1, 5, 20, 20, 50, 500, 1000, 2000]


def test_no_labels_draws_an_empty_chart_that_says_so():
    assert line_chart("Members", [], []) == (
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-line" viewBox="0 0 640 200" width="640" '
        'height="200" role="img" aria-label="Members: no data"><title>Members: no data</title><text x="320" y="100" '
        'text-anchor="middle" font-size="13">no data yet</text></svg>')
    assert "no data yet" in bar_chart("Events", ["00h"], [])


def test_a_series_of_another_length_or_a_negative_count_is_refused():
    with pytest.raises(ValueError, match="series 'x' has 1 values for 2 labels: give one value per label"):
        line_chart("t", ["a", "b"], [Series("x", (1,))])
    with pytest.raises(ValueError, match="series 'x' has a negative value"):
        bar_chart("t", ["a"], [Series("x", (-1,))])


def test_per_hour_counts_fill_the_hours_between_with_zero_and_keep_the_latest():
    from stream.admin.charts import hour_series
    assert hour_series({"2024-03-09T23:00:00Z": 5, "2024-03-10T02": 1, "2024-03-09T23": 2}) == (
        ["03-09 23h", "03-10 00h", "03-10 01h", "03-10 02h"], (7, 0, 0, 1))
    assert hour_series({"2024-03-09T00": 1, "2024-03-10T00": 3}, max_hours=2) == (["03-09 23h", "03-10 00h"], (0, 3))
    assert hour_series({}) == ([], ())
