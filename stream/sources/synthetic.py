"""A seeded, realistic interaction stream with known ground truth.

A catalog of items drawn from several topics (titles, categories and
descriptions in each topic's vocabulary, Zipf popularity within a topic);
users with a few interests each; sessions that show impressions, get clicks,
carts, purchases, ratings and reviews whose sentiment matches the rating.
Interests change at configured change points, abruptly (a share of users
swap their interests at once) or gradually (they drift over a window).
:class:`GroundTruth` says what each user likes at any event index.

>>> stream = SyntheticStream(SyntheticConfig(n_users=5, n_items=40, seed=3))
>>> events = list(stream.events(50))
>>> len(events), events[0].event_type.value in {"impression", "click", "view"}
(50, True)
>>> stream.truth.topic_of(events[0].item_id) in range(stream.config.n_topics)
True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from schemas.events import EventType, InteractionEvent, ItemText

__all__ = ["TOPICS", "ChangePoint", "GroundTruth", "SyntheticConfig", "SyntheticStream"]

#: (category, subcategories, adjectives, nouns, description phrases)
TOPICS: list[tuple[str, list[str], list[str], list[str], list[str]]] = [
    (
        "Science Fiction",
        ["Space Opera", "Cyberpunk", "Time Travel"],
        ["Galactic", "Quantum", "Neon", "Orbital", "Starbound", "Android"],
        ["Odyssey", "Frontier", "Empire", "Signal", "Colony", "Paradox"],
        [
            "starships cross a dying galaxy",
            "a hacker rewires a megacity",
            "a crew wakes centuries late",
            "first contact goes wrong",
            "an AI questions its makers",
        ],
    ),
    (
        "Cooking",
        ["Baking", "Italian", "Vegetarian"],
        ["Rustic", "Crispy", "Slow-Cooked", "Homemade", "Spicy", "Golden"],
        ["Sourdough", "Risotto", "Lasagna", "Curry", "Tart", "Dumplings"],
        [
            "a family recipe from the countryside",
            "weeknight dinners in thirty minutes",
            "bread with a crackling crust",
            "fresh pasta rolled by hand",
            "vegetables at their best",
        ],
    ),
    (
        "Running",
        ["Trail", "Marathon", "Shoes"],
        ["Lightweight", "Cushioned", "Breathable", "Waterproof", "Reflective", "Carbon"],
        ["Trainer", "Vest", "Jacket", "Watch", "Tights", "Insoles"],
        [
            "for long runs on hard roads",
            "grip on muddy mountain trails",
            "race-day speed",
            "keeps you dry in the rain",
            "tracks pace and heart rate",
        ],
    ),
    (
        "Jazz",
        ["Bebop", "Swing", "Fusion"],
        ["Blue", "Smoky", "Midnight", "Cool", "Modal", "Swinging"],
        ["Sessions", "Quartet", "Standards", "Ballads", "Suite", "Live at the Vanguard"],
        [
            "a saxophone that cries at midnight",
            "brushes on the snare and a walking bass",
            "live recordings from a smoky club",
            "improvised solos over modal changes",
        ],
    ),
    (
        "Gardening",
        ["Vegetables", "Houseplants", "Tools"],
        ["Organic", "Heirloom", "Ceramic", "Self-Watering", "Compact", "Hardy"],
        ["Tomato Seeds", "Planter", "Pruning Shears", "Compost", "Trellis", "Fern"],
        [
            "grow your own tomatoes on a balcony",
            "plants that thrive in low light",
            "tools that last a lifetime",
            "rich soil from kitchen scraps",
        ],
    ),
    (
        "Video Games",
        ["RPG", "Strategy", "Platformer"],
        ["Legendary", "Pixel", "Open-World", "Tactical", "Co-op", "Retro"],
        ["Quest", "Dungeon", "Kingdom", "Raid", "Arena", "Saga"],
        [
            "explore a vast fantasy world",
            "command armies turn by turn",
            "jump through hand-drawn levels",
            "team up with friends online",
        ],
    ),
    (
        "Travel",
        ["Guides", "Luggage", "Outdoors"],
        ["Backpacker's", "Carry-On", "Coastal", "Alpine", "Ultralight", "Weekend"],
        ["Guide to Lisbon", "Suitcase", "Hiking Map", "Travel Pillow", "Daypack", "Phrasebook"],
        [
            "hidden corners of old cities",
            "packs flat for overhead bins",
            "routes through high mountain passes",
            "sleep well on long flights",
        ],
    ),
    (
        "Photography",
        ["Cameras", "Lenses", "Lighting"],
        ["Mirrorless", "Prime", "Wide-Angle", "Vintage", "Full-Frame", "Portable"],
        ["Camera", "Lens", "Tripod", "Softbox", "Flash", "Filter Kit"],
        [
            "sharp portraits with creamy bokeh",
            "landscapes at golden hour",
            "steady shots in low light",
            "studio light on a budget",
        ],
    ),
]

_POSITIVE = [
    "Loved it",
    "Absolutely wonderful",
    "Exceeded my expectations",
    "Would buy again",
    "Brilliant, highly recommend",
]
_NEUTRAL = ["It was okay", "Decent but nothing special", "Does the job"]
_NEGATIVE = [
    "Disappointing",
    "Waste of money",
    "Broke after a week",
    "Not what I expected",
    "Would not recommend",
]


@dataclass(frozen=True)
class ChangePoint:
    """At event ``at``, ``share`` of the users take new interests (over ``width`` events
    when ``gradual``)."""

    at: int
    share: float = 1.0
    gradual: bool = False
    width: int = 0


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int = 60
    n_items: int = 400
    n_topics: int = 8
    interests_per_user: int = 2
    change_points: tuple[ChangePoint, ...] = ()
    impressions_per_session: int = 2
    events_per_minute: float = 60.0
    start: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n_topics <= len(TOPICS):
            raise ValueError(f"n_topics must be between 1 and {len(TOPICS)}")
        if self.interests_per_user > self.n_topics:
            raise ValueError("interests_per_user cannot exceed n_topics")


class GroundTruth:
    """What the generator knows: item topics and each user's interests over time."""

    def __init__(
        self,
        item_topic: np.ndarray,
        phases: list[tuple[int, np.ndarray]],
        changes: list[ChangePoint],
        changed: list[np.ndarray],
    ) -> None:
        self.item_topic = item_topic
        self._phases = phases  # (start event, interests [users, topics])
        self.change_points = changes
        self.changed_users = changed  # per change point: user indices affected

    def topic_of(self, item_id: str) -> int:
        return int(self.item_topic[int(item_id.rsplit("-", 1)[1])])

    def interests(self, at: int) -> np.ndarray:
        """[users, topics] interest weights (rows sum to 1) at event index ``at``."""
        current = self._phases[0][1]
        for k, (start, weights) in enumerate(self._phases):
            if at < start:
                break
            current = weights
            change = self.change_points[k - 1] if k > 0 else None
            if change is not None and change.gradual and at < start + change.width:
                mix = (at - start) / max(1, change.width)
                current = (1 - mix) * self._phases[k - 1][1] + mix * weights
        return current

    def liked_topics(self, user: int, at: int) -> set[int]:
        row = self.interests(at)[user]
        return {int(t) for t in np.flatnonzero(row >= 0.5 * row.max())}


class SyntheticStream:
    """Generates events; the same seed gives the same stream."""

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = c = config or SyntheticConfig()
        self._rng = rng = np.random.default_rng(c.seed)
        self.items = self._catalog(rng)
        item_topic = np.array([t for t, _ in self.items], dtype=np.int64)
        self._by_topic = [np.flatnonzero(item_topic == t) for t in range(c.n_topics)]
        # Zipf popularity inside each topic
        self._popularity = [1.0 / np.arange(1, len(ix) + 1) ** 0.8 for ix in self._by_topic]
        self._popularity = [p / p.sum() for p in self._popularity]
        self._activity = 1.0 / np.arange(1, c.n_users + 1) ** 0.5
        self._activity /= self._activity.sum()
        phases, changed = [(0, self._draw_interests(rng, c.n_users))], []
        for cp in sorted(c.change_points, key=lambda x: x.at):
            prev = phases[-1][1]
            who = rng.choice(c.n_users, size=max(1, round(cp.share * c.n_users)), replace=False)
            new = prev.copy()
            new[who] = self._draw_interests(rng, len(who), avoid=prev[who])
            phases.append((cp.at, new))
            changed.append(np.sort(who))
        self.truth = GroundTruth(
            item_topic, phases, sorted(c.change_points, key=lambda x: x.at), changed
        )

    def _catalog(self, rng: np.random.Generator) -> list[tuple[int, ItemText]]:
        c = self.config
        items = []
        for i in range(c.n_items):
            topic = i % c.n_topics
            cat, subs, adjs, nouns, phrases = TOPICS[topic]
            title = f"{rng.choice(adjs)} {rng.choice(nouns)} {i}"
            text = ItemText(
                title=title,
                categories=[cat, str(rng.choice(subs))],
                description=f"{str(rng.choice(phrases)).capitalize()}.",
            )
            items.append((topic, text))
        return items

    def _draw_interests(
        self, rng: np.random.Generator, n: int, avoid: np.ndarray | None = None
    ) -> np.ndarray:
        c = self.config
        weights = np.zeros((n, c.n_topics))
        for u in range(n):
            choices = np.arange(c.n_topics)
            if avoid is not None:  # a change moves users to topics they did not like
                old = set(np.flatnonzero(avoid[u] > 0))
                fresh = [t for t in choices if t not in old]
                choices = np.array(fresh if len(fresh) >= c.interests_per_user else choices)
            picked = rng.choice(choices, size=c.interests_per_user, replace=False)
            weights[u, picked] = rng.dirichlet(np.full(c.interests_per_user, 2.0))
        return weights

    def item_id(self, index: int) -> str:
        return f"item-{index}"

    def events(self, n: int) -> Iterator[InteractionEvent]:
        """The first ``n`` events of the stream."""
        c, rng = self.config, self._rng
        step = timedelta(minutes=1) / c.events_per_minute
        emitted, session = 0, 0
        while emitted < n:
            for event in self._session(rng, emitted, session):
                if emitted >= n:
                    return
                yield event.model_copy(update={"timestamp": c.start + emitted * step})
                emitted += 1
            session += 1

    def _pick_item(self, rng: np.random.Generator, topic: int) -> int:
        candidates = self._by_topic[topic]
        return int(candidates[rng.choice(len(candidates), p=self._popularity[topic])])

    def _session(
        self, rng: np.random.Generator, at: int, session: int
    ) -> Iterator[InteractionEvent]:
        c = self.config
        user = int(rng.choice(c.n_users, p=self._activity))
        interests = self.truth.interests(at)[user]
        liked_topic = int(rng.choice(c.n_topics, p=interests))
        target = self._pick_item(rng, liked_topic)
        shown = [target] + [
            self._pick_item(rng, int(rng.integers(c.n_topics)))
            for _ in range(max(0, c.impressions_per_session - 1))
        ]
        uid = f"user-{user}"
        seq = 0

        def make(
            kind: EventType, item: int, value: float | None = None, review_text: str | None = None
        ) -> InteractionEvent:
            nonlocal seq
            seq += 1
            return InteractionEvent(
                event_id=f"s{c.seed}-{session}-{seq}",
                user_id=uid,
                item_id=self.item_id(item),
                event_type=kind,
                timestamp=c.start,
                item=self.items[item][1],
                value=value,
                review_text=review_text,
            )

        for item in shown[1:]:
            yield make(EventType.IMPRESSION, item)
        yield make(EventType.CLICK, target)
        affinity = interests[liked_topic] / interests.max()
        if rng.random() < 0.35 * affinity:
            yield make(EventType.ADD_TO_CART, target)
            if rng.random() < 0.6:
                yield make(EventType.PURCHASE, target)
                if rng.random() < 0.5:
                    rating = float(np.clip(round(2.5 + 2.5 * affinity + rng.normal(0, 0.7)), 1, 5))
                    review = _review(rng, rating) if rng.random() < 0.6 else None
                    yield make(EventType.RATING, target, value=rating, review_text=review)
        elif rng.random() < 0.1:
            yield make(EventType.SKIP, shown[-1])


def _review(rng: np.random.Generator, rating: float) -> str:
    pool = _POSITIVE if rating >= 4 else _NEGATIVE if rating <= 2 else _NEUTRAL
    return f"{rng.choice(pool)}."
