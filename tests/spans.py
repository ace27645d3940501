"""Timelines of (start, end) spans, as the tests record requests, steps and runs."""


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """Most intervals open at once; an interval that ends when another starts does not overlap it."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    now = most = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most
