"""One SVG chart: a None value breaks a line, a threshold above the axis is only labelled, labels escaped."""

from __future__ import annotations

from nginx_canary.report.svg import Chart, Marker, nice_ceiling


def test_a_none_value_breaks_the_line_and_a_step_line_is_a_staircase():
    chart = Chart("c", 0.0, 10.0, 1.0, str)
    chart.line([(0, 0.5), (1, 0.6), (2, None), (3, 0.1)], "#000", "plain")
    chart.line([(0, 0.0), (5, 1.0)], "#111", "steps", step=True)
    svg = chart.svg()
    assert svg.count('class="series"') == 2
    plain, steps = [part.split(' d="')[1].split('"')[0] for part in chart.parts]
    assert plain.count("M") == 2 and "L" in plain
    assert steps.count("H") == 1 and steps.count("V") == 1


def test_a_threshold_above_the_axis_is_only_labelled_and_labels_are_escaped():
    chart = Chart("<t>", 0.0, 10.0, 1.0, str)
    chart.threshold(2.0, "<max>")
    chart.markers([Marker(5.0, "<m>", "rollback"), Marker(50.0, "outside", "step")])
    page = chart.html("<none>")
    assert "&lt;max&gt; (above the chart)" in page and "<line x1=\"70\"" not in "".join(chart.parts)
    assert "&lt;m&gt;" in page and "outside" not in page and "&lt;none&gt;" in page and "<t>" not in page


def test_nice_ceiling():
    assert [nice_ceiling(v) for v in (0, 0.7, 1.0, 1.1, 2.2, 3, 7, 1100)] == [1, 1, 1, 2, 2.5, 5, 10, 2000]
