"""Event sources: MovieLens (both layouts), Amazon reviews (both layouts), the synthetic
generator's ground truth, and pacing."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from stream.sender import Pacer
from stream.sources.amazon import AmazonReviews
from stream.sources.movielens import MovieLens
from stream.sources.synthetic import ChangePoint, SyntheticConfig, SyntheticStream


def test_movielens_100k_layout(tmp_path: Path) -> None:
    genres = ["0"] * 19
    genres[1] = genres[15] = "1"  # Action, Sci-Fi
    (tmp_path / "u.item").write_bytes(
        ("1|Alien (1979)|01-Jan-1979||http://x|" + "|".join(genres) + "\n").encode("latin-1")
    )
    (tmp_path / "u.data").write_text("7\t1\t5\t881250949\n8\t1\t3\t881250900\n9\tx\n")
    ml = MovieLens(tmp_path)
    events = list(ml.events())
    assert [(e.user_id, e.value) for e in events] == [("8", 3.0), ("7", 5.0)]  # time order
    assert events[0].item is not None
    assert events[0].item.title == "Alien (1979)"
    assert events[0].item.categories == ["Action", "Sci-Fi"]
    assert [str(e) for e in ml.errors] == ["u.data:3: expected 4 columns, got 2"]


def test_movielens_latest_layout_merges_tags_as_reviews(tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,"Heat (1995)",Action|Crime|Thriller\n2,Nada,(no genres listed)\n'
    )
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,0.5,100\n1,2,4.0,300\n"
    )
    (tmp_path / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,slow burn,200\n")
    events = list(MovieLens(tmp_path).events())
    assert [e.event_type.value for e in events] == ["rating", "review", "rating"]
    assert events[0].value == 1.0  # half stars below 1 are clipped to the scale
    assert events[1].review_text == "slow burn"
    assert events[2].item is not None
    assert events[2].item.categories == []
    assert len({e.event_id for e in events}) == 3
    assert (
        list(MovieLens(tmp_path, include_tags=False).events(limit=5))[1].event_type.value
        == "rating"
    )


def test_amazon_reviews_both_layouts_gzipped_with_metadata(tmp_path: Path) -> None:
    reviews = tmp_path / "Books.jsonl.gz"
    rows = [
        {
            "user_id": "U1",
            "parent_asin": "P1",
            "asin": "X",
            "rating": 4.0,
            "title": "Good read",
            "text": "Long but worth it",
            "timestamp": 1_600_000_000_000,
        },
        {
            "reviewerID": "U2",
            "asin": "P1",
            "overall": 1.0,
            "summary": "Boring",
            "reviewText": "",
            "unixReviewTime": 1_500_000_000,
        },
        {"reviewerID": "U3", "asin": "P2"},
    ]
    with gzip.open(reviews, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    meta = tmp_path / "meta.jsonl"
    meta.write_text(
        json.dumps(
            {
                "parent_asin": "P1",
                "title": "Dune",
                "main_category": "Books",
                "categories": ["Sci-Fi"],
                "description": ["A desert planet."],
            }
        )
        + "\n"
    )
    source = AmazonReviews(reviews, meta)
    events = list(source.events())
    assert [(e.user_id, e.value, e.review_text) for e in events] == [
        ("U2", 1.0, "Boring"),
        ("U1", 4.0, "Good read. Long but worth it"),
    ]
    assert events[1].item is not None
    assert events[1].item.title == "Dune"
    assert events[1].item.categories == ["Books", "Sci-Fi"]
    assert events[1].timestamp == datetime.fromtimestamp(1_600_000_000, UTC)
    assert [e.line for e in source.errors] == [3, 4]


def test_synthetic_ground_truth_and_change_points() -> None:
    abrupt = SyntheticStream(
        SyntheticConfig(n_users=30, seed=5, change_points=(ChangePoint(500, share=1.0),))
    )
    truth = abrupt.truth
    assert not np.allclose(truth.interests(499), truth.interests(500))
    assert all(not (truth.liked_topics(u, 0) & truth.liked_topics(u, 600)) for u in range(30))
    gradual = SyntheticStream(
        SyntheticConfig(
            n_users=30,
            seed=5,
            change_points=(ChangePoint(500, share=1.0, gradual=True, width=400),),
        )
    ).truth
    halfway = gradual.interests(700)
    assert np.allclose(halfway, 0.5 * gradual.interests(499) + 0.5 * gradual.interests(900))
    events = list(abrupt.events(3000))
    assert [e.event_id for e in events] == [
        e.event_id for e in SyntheticStream(abrupt.config).events(3000)
    ]
    ratings = [e for e in events if e.event_type.value == "rating" and e.review_text]
    assert ratings
    for e in ratings:
        assert e.value is not None
        positive = any(
            w in e.review_text for w in ("Loved", "wonderful", "Exceeded", "buy again", "Brilliant")
        )
        assert positive == (e.value >= 4)
    # people click what matches their interests far more often than chance
    clicks = [e for e in events[:500] if e.event_type.value == "click"]
    liked = np.mean(
        [truth.topic_of(e.item_id) in truth.liked_topics(int(e.user_id[5:]), 0) for e in clicks]
    )
    assert liked > 0.6


def test_pacer_keeps_a_rate_and_replays_original_timing() -> None:
    now = [0.0]
    fixed = Pacer(rate=10.0, clock=lambda: now[0])
    assert [round(fixed.delay(None), 3) for _ in range(3)] == [0.0, 0.1, 0.2]
    original = Pacer(original=True, speedup=60.0, clock=lambda: now[0])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert original.delay(t0) == 0.0
    assert original.delay(t0 + timedelta(minutes=2)) == 2.0  # two minutes, 60x faster
