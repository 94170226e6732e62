"""The stage clock of a run: nested stages count only their own time, and the totals survive."""
import itertools

from remind.stage_times import StageTimes


def fake_clock(ticks):
    it = iter(ticks)
    return lambda: next(it)


def test_nested_stages_count_their_own_time_only():
    seconds = {}
    # outer opens at 0, inner 2..5, outer closes at 10; then outer again 10..11
    times = StageTimes(seconds, clock=fake_clock([0.0, 2.0, 5.0, 10.0, 10.0, 11.0]))
    with times("steps"):
        with times("checkpoints"):
            pass
    with times("steps"):
        pass
    assert seconds == {"steps": 7.0 + 1.0, "checkpoints": 3.0}
    assert "steps 8.0 s (73%)" in times.summary() and times.summary().endswith("total 11.0 s")


def test_timed_iteration_charges_producing_items_and_continues_totals():
    seconds = {"load": 1.0}  # a resumed run's totals go on from the saved ones
    synced = []
    times = StageTimes(seconds, sync=lambda: synced.append(1), clock=fake_clock(itertools.count()))
    got = list(times.timed("load", iter([10, 20])))
    assert got == [10, 20]
    assert seconds["load"] == 1.0 + 3 and len(synced) == 3  # two items and the final StopIteration
