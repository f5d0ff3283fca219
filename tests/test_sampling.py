"""Frame sampling: TSN segment centres, dense windows, clips, short videos, jitter."""
from __future__ import annotations

import numpy as np
import pytest

from clipcache.pipeline.extract.sampling import SamplingPlan, jitter_clip, needs_repetition, sample_clips


def test_uniform_takes_segment_centres() -> None:
    np.testing.assert_array_equal(sample_clips(80, SamplingPlan(8)), [[5, 15, 25, 35, 45, 55, 65, 75]])


def test_uniform_clips_take_distinct_offsets_in_each_segment() -> None:
    clips = sample_clips(80, SamplingPlan(4, clips=2))
    np.testing.assert_array_equal(clips, [[5, 25, 45, 65], [15, 35, 55, 75]])


def test_dense_window_is_centred_with_its_stride() -> None:
    np.testing.assert_array_equal(sample_clips(100, SamplingPlan(4, "dense", stride=8)), [[37, 45, 53, 61]])


def test_dense_clips_spread_over_the_video() -> None:
    clips = sample_clips(100, SamplingPlan(4, "dense", stride=2, clips=3))
    starts = clips[:, 0]
    assert list(np.diff(clips, axis=1).ravel()) == [2] * 9
    assert starts[0] < starts[1] < starts[2] and starts[0] >= 0 and clips.max() < 100


@pytest.mark.parametrize("plan", [SamplingPlan(8), SamplingPlan(8, "dense", stride=4), SamplingPlan(8, clips=3)])
def test_short_videos_repeat_frames_in_order(plan: SamplingPlan) -> None:
    clips = sample_clips(3, plan)
    assert clips.shape == (plan.clips, 8) and clips.min() >= 0 and clips.max() <= 2
    assert (np.diff(clips, axis=1) >= 0).all()
    assert needs_repetition(3, plan)
    assert not needs_repetition(1000, plan)


def test_single_frame_video() -> None:
    np.testing.assert_array_equal(sample_clips(1, SamplingPlan(4)), [[0, 0, 0, 0]])


def test_jitter_stays_in_segments_and_varies() -> None:
    rng = np.random.default_rng(0)
    plan = SamplingPlan(4)
    draws = np.stack([jitter_clip(40, plan, rng) for _ in range(50)])
    for t in range(4):
        assert draws[:, t].min() >= 10 * t and draws[:, t].max() < 10 * (t + 1)
    assert len({tuple(d) for d in draws}) > 10
    dense = jitter_clip(40, SamplingPlan(4, "dense", stride=3), rng)
    assert list(np.diff(dense)) == [3, 3, 3]


@pytest.mark.parametrize("kwargs, message", [
    ({"frames": 0}, "--frames must be at least 1"),
    ({"frames": 4, "mode": "random"}, "--sampling 'random'"),
    ({"frames": 4, "stride": 0}, "--stride must be at least 1"),
    ({"frames": 4, "clips": 0}, "--clips must be at least 1"),
])
def test_bad_plans_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingPlan(**kwargs)


def test_empty_video_is_refused() -> None:
    with pytest.raises(ValueError, match="0 frames"):
        sample_clips(0, SamplingPlan(4))
