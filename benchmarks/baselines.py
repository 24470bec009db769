"""The simple recommenders the field uses as bars, learned test-then-train like lorastream.

All of them read one :class:`Counts` per stream, updated once per batch (the first
contender to learn a batch updates it; the others find it current): the catalog seen so
far, each user's positives in order, item-item co-occurrence ``XᵀX`` over positives, and
popularity decayed with several half-lives. Scores are computed in bulk with numpy.

- :class:`DecayedPopularity` — most popular, counts halved every ``half_life`` events;
- :class:`ItemKNN` — cosine item-item similarity from co-occurrence, summed over the user's
  last ``history`` positives with recency weights;
- :class:`SessionKNN` — users with similar recent positives vote for their recent items;
- :class:`EASE` — Steck's closed form, refitted every ``every`` events on everything seen;
- :class:`Blend` — item-kNN and decayed popularity, each scaled to [0, 1] per user, mixed;
- :class:`CategoryAffinity` — decayed popularity times the user's share of recent positives
  in the item's categories (genres, topics): content-based, needs item metadata only.

>>> from datetime import datetime, UTC
>>> from schemas.events import InteractionEvent
>>> t = datetime(2026, 1, 1, tzinfo=UTC)
>>> def click(u, i): return InteractionEvent(event_id=f"{u}{i}", user_id=u, item_id=i,
...                                          event_type="click", timestamp=t)
>>> counts = Counts()
>>> knn = ItemKNN(counts, history=5)
>>> knn.learn([click("a", "x"), click("a", "y"), click("b", "x"), click("b", "y"),
...            click("c", "x")])
>>> knn.scores(["c"], ["x", "y", "z"]).round(2).tolist()   # c likes x; x goes with y
[[1.0, 0.82, -inf]]
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from schemas.events import InteractionEvent

__all__ = [
    "EASE",
    "UNLEARNED",
    "Blend",
    "CategoryAffinity",
    "Counts",
    "DecayedPopularity",
    "ItemKNN",
    "SessionKNN",
    "is_positive",
    "unlearned_rest",
]

#: The score of an item a contender has learned nothing about: ranked last. The protocol's
#: candidates include a batch's new items, and most of those are the truth of a test in
#: that batch (someone interacts with them there), so a contender that scored them 0 above
#: known items scored below 0 would be told answers.
UNLEARNED = -math.inf


def unlearned_rest(users: int, learned: np.ndarray) -> np.ndarray:
    """[users, items] scores to fill in: 0 where ``learned`` [items], UNLEARNED elsewhere.

    >>> unlearned_rest(2, np.array([True, False]))
    array([[  0., -inf],
           [  0., -inf]])
    """
    return np.where(learned, 0.0, UNLEARNED)[None, :].repeat(users, axis=0)


def is_positive(event: InteractionEvent, threshold: float = 3.5) -> bool:
    """The protocol's positive feedback: a rating at or above ``threshold``, or an implicit
    positive (view, click, cart, purchase, review)."""
    kind = event.event_type.value
    if kind == "rating":
        return (event.value or 0.0) >= threshold
    return kind in ("view", "click", "add_to_cart", "purchase", "review")


class Counts:
    """Statistics of a stream's positives, shared by the simple contenders."""

    def __init__(self, half_lives: Sequence[float] = (), growth: int = 2048) -> None:
        self.index: dict[str, int] = {}
        self.history: dict[str, list[int]] = {}  # user -> item columns of positives, in order
        self.half_lives = tuple(half_lives)
        self._growth = growth
        self.cooc = np.zeros((0, 0), dtype=np.float32)  # [n, n]; the diagonal: item counts
        self.pop = np.zeros((len(self.half_lives), 0))  # decayed counts at time pop_t
        self.pop_t = np.zeros(0)
        self.t = 0  # events seen
        self._last: tuple[int, str, str] | None = None
        self.category_ids: dict[str, int] = {}
        self._in_category = np.zeros((0, 0), dtype=bool)  # [n, C] item column in category

    @property
    def n(self) -> int:
        return len(self.index)

    def columns(self, items: Sequence[str]) -> np.ndarray:
        """Column of each item; -1 for items never seen."""
        return np.fromiter((self.index.get(i, -1) for i in items), np.int64, len(items))

    def _grow(self, n: int) -> None:
        size = self.cooc.shape[0]
        if n <= size:
            return
        new = size + max(self._growth, n - size)
        cooc = np.zeros((new, new), dtype=np.float32)
        cooc[:size, :size] = self.cooc
        self.cooc = cooc
        self.pop = np.pad(self.pop, ((0, 0), (0, new - size)))
        self.pop_t = np.pad(self.pop_t, (0, new - size))
        self._in_category = np.pad(self._in_category, ((0, new - size), (0, 0)))

    def update(self, events: Sequence[InteractionEvent]) -> None:
        """Count a batch (once, however many contenders call this for it)."""
        if not events:
            return
        key = (len(events), events[0].event_id, events[-1].event_id)
        if key == self._last:
            return
        self._last = key
        for k, e in enumerate(events):
            i = self._add_item(e)  # every table has the item's row from here
            if not is_positive(e):
                continue
            past = self.history.setdefault(e.user_id, [])
            if past:
                mine = np.asarray(past)
                self.cooc[i, mine] += 1.0
                self.cooc[mine, i] += 1.0
            self.cooc[i, i] += 1.0
            past.append(i)
            self._count(i, self.t + k)
        self.t += len(events)

    def _add_item(self, event: InteractionEvent) -> int:
        """The item's column (a new item gets one, and a row in every table), and its
        categories the first time its text has any."""
        col = self.index.setdefault(event.item_id, len(self.index))
        cats = event.item.categories if event.item is not None else []
        ids = [self.category_ids.setdefault(c, len(self.category_ids)) for c in cats]
        self._grow(self.n)
        more = len(self.category_ids) - self._in_category.shape[1]
        if more > 0:
            self._in_category = np.pad(self._in_category, ((0, 0), (0, more)))
        if ids and not self._in_category[col].any():
            self._in_category[col, ids] = True
        return col

    def category_matrix(self) -> np.ndarray:
        """[n, C] each item's categories as a row summing to 1 (1/C each where it has none)."""
        member = self._in_category[: self.n].astype(np.float64)
        if member.shape[1] == 0:  # no item has categories: all alike
            return np.ones((self.n, 1))
        size = member.sum(axis=1, keepdims=True)
        uniform = 1.0 / max(1, member.shape[1])
        return np.where(size > 0, member / np.maximum(size, 1.0), uniform)  # type: ignore[no-any-return]

    def _count(self, i: int, t: float) -> None:
        if not self.half_lives:
            return
        h = np.asarray(self.half_lives)
        self.pop[:, i] = self.pop[:, i] * np.exp2(-(t - self.pop_t[i]) / h) + 1.0
        self.pop_t[i] = t

    def popularity(self, which: int, cols: np.ndarray) -> np.ndarray:
        """Decayed counts (half-life ``half_lives[which]``) of ``cols`` now (0 for -1)."""
        ok = cols >= 0
        out = np.zeros(len(cols))
        c = cols[ok]
        age = self.t - self.pop_t[c]
        out[ok] = self.pop[which, c] * np.exp2(-age / self.half_lives[which])
        return out

    def recent(self, user: str, k: int) -> np.ndarray:
        return np.asarray(self.history.get(user, [])[-k:], dtype=np.int64)


class _Simple:
    """A contender that learns by counting (nothing to predict ratings with)."""

    name: str

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.learn_seconds = 0.0

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        pass

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        return None

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        t0 = time.perf_counter()
        self.counts.update(events)
        self._learned(events)
        self.learn_seconds += time.perf_counter() - t0

    def _learned(self, events: Sequence[InteractionEvent]) -> None:
        pass

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """[U, items]; an item never counted is -inf (ranked last: see :data:`UNLEARNED`)."""
        cols = self.counts.columns(items)
        out = np.full((len(users), len(items)), UNLEARNED)
        known = cols >= 0
        if known.any():
            out[:, known] = self._scores(users, cols[known])
        return out

    def _scores(self, users: Sequence[str], cols: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class DecayedPopularity(_Simple):
    """Most popular, each positive's weight halved every ``half_life`` events."""

    def __init__(self, counts: Counts, half_life: float) -> None:
        super().__init__(counts)
        self.which = counts.half_lives.index(half_life)
        self.half_life = half_life
        self.name = f"most-popular (half-life {half_life:g})"

    def _scores(self, users: Sequence[str], cols: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts.popularity(self.which, cols), (len(users), len(cols)))


def knn_scores(
    counts: Counts, users: Sequence[str], cols: np.ndarray, history: int, decay: float
) -> np.ndarray:
    """Σ over the user's last ``history`` positives (newest weighted 1, then ``decay``^k) of
    cosine(that item, candidate), from co-occurrence counts."""
    diag = np.maximum(np.diagonal(counts.cooc)[: counts.n], 1e-9)
    out = np.zeros((len(users), len(cols)))
    norm_c = np.sqrt(diag[cols])
    for row, user in enumerate(users):
        recent = counts.recent(user, history)
        if len(recent) == 0:
            continue
        weights = decay ** np.arange(len(recent))[::-1]
        sims = counts.cooc[np.ix_(recent, cols)] / (np.sqrt(diag[recent])[:, None] * norm_c)
        out[row] = weights @ sims
    return out


class ItemKNN(_Simple):
    """Item-kNN on co-occurrence cosine over the user's recent positives, recency-weighted."""

    def __init__(self, counts: Counts, history: int = 20, decay: float = 0.9) -> None:
        super().__init__(counts)
        self.history, self.decay = history, decay
        self.name = f"item-kNN (last {history}, decay {decay:g})"

    def _scores(self, users: Sequence[str], cols: np.ndarray) -> np.ndarray:
        return knn_scores(self.counts, users, cols, self.history, self.decay)


class SessionKNN(_Simple):
    """Session-kNN: users whose last ``history`` positives overlap this user's (cosine of the
    recency-weighted indicator vectors) vote for their own recent positives."""

    def __init__(
        self, counts: Counts, history: int = 50, neighbours: int = 50, decay: float = 0.95
    ) -> None:
        super().__init__(counts)
        self.history, self.neighbours, self.decay = history, neighbours, decay
        self.name = f"session-kNN (last {history}, {neighbours} neighbours)"

    def _profiles(self) -> tuple[list[str], np.ndarray]:
        users = list(self.counts.history)
        R = np.zeros((len(users), self.counts.n))
        for row, user in enumerate(users):
            recent = self.counts.recent(user, self.history)
            R[row, recent] = self.decay ** np.arange(len(recent))[::-1]
        norms = np.linalg.norm(R, axis=1, keepdims=True)
        return users, R / np.maximum(norms, 1e-9)

    def _scores(self, users: Sequence[str], cols: np.ndarray) -> np.ndarray:
        names, R = self._profiles()
        if not names:
            return np.zeros((len(users), len(cols)))
        row_of = {u: k for k, u in enumerate(names)}
        out = np.zeros((len(users), len(cols)))
        for row, user in enumerate(users):
            if user not in row_of:
                continue
            sims = R @ R[row_of[user]]
            sims[row_of[user]] = 0.0
            top = np.argsort(sims)[::-1][: self.neighbours]
            out[row] = sims[top] @ R[top][:, cols]
        return out


class EASE(_Simple):
    """EASE (Steck 2019): ``B = I - P / diag(P)``, ``P = (XᵀX + λI)⁻¹``, refitted every
    ``every`` events on all positives so far; a user's score is their history times B.
    Items without a positive at the last fit are :data:`UNLEARNED`."""

    def __init__(self, counts: Counts, lam: float = 200.0, every: int = 5000) -> None:
        super().__init__(counts)
        self.lam, self.every = lam, every
        self.name = f"EASE (λ={lam:g}, refit every {every})"
        self._B = np.zeros((0, 0), dtype=np.float32)
        self._positive = np.zeros(0, dtype=bool)  # [n at the fit] had a positive by then
        self._fitted_at = -every

    def _learned(self, events: Sequence[InteractionEvent]) -> None:
        if self.counts.t - self._fitted_at >= self.every:
            self._fit()

    def _fit(self) -> None:
        n = self.counts.n
        G = self.counts.cooc[:n, :n].astype(np.float64)
        G[np.diag_indices(n)] += self.lam
        P = np.linalg.inv(G)
        B = -P / np.diagonal(P)[None, :]
        B[np.diag_indices(n)] = 0.0
        self._B = B.astype(np.float32)
        self._positive = np.diagonal(self.counts.cooc)[:n] > 0
        self._fitted_at = self.counts.t

    def _scores(self, users: Sequence[str], cols: np.ndarray) -> np.ndarray:
        n = self._B.shape[0]
        fitted = (cols < n) & self._positive[np.minimum(cols, n - 1)] if n else cols < 0
        out = unlearned_rest(len(users), fitted)
        for row, user in enumerate(users):
            past = np.asarray(self.counts.history.get(user, []), dtype=np.int64)
            past = past[past < n]
            if len(past):
                out[row, fitted] = self._B[np.ix_(np.unique(past), cols[fitted])].sum(axis=0)
        return out


def _unit(scores: np.ndarray) -> np.ndarray:
    """Each row divided by its largest value (rows of zeros stay zero)."""
    top = scores.max(axis=1, keepdims=True)
    return scores / np.where(top > 0, top, 1.0)


class Blend(_Simple):
    """``weight`` · item-kNN + (1 − ``weight``) · decayed popularity, each scaled to [0, 1]."""

    def __init__(
        self,
        counts: Counts,
        half_life: float,
        weight: float = 0.5,
        history: int = 20,
        decay: float = 0.9,
    ) -> None:
        super().__init__(counts)
        self.which = counts.half_lives.index(half_life)
        self.weight, self.history, self.decay = weight, history, decay
        self.name = (
            f"item-kNN + popularity (w={weight:g}, half-life {half_life:g},"
            f" last {history}, decay {decay:g})"
        )

    def _scores(self, users: Sequence[str], cols: np.ndarray) -> np.ndarray:
        knn = _unit(knn_scores(self.counts, users, cols, self.history, self.decay))
        pop = self.counts.popularity(self.which, cols)[None, :]
        return self.weight * knn + (1 - self.weight) * _unit(pop)


class CategoryAffinity(_Simple):
    """Decayed popularity times ``P̂(category | user)``, averaged over the item's categories:
    the user's recency-weighted share of their last ``history`` positives in each category,
    smoothed by ``smoothing`` per category (a user with no history gets popularity).

    Where categories are what users choose by (topics of a catalog) it approximates the
    generative model ``P(item | user) = Σ_c P(c | user) · P(item | c)`` with counts: it
    multiplies by the item's popularity over the whole catalog, not within its category,
    which also ranks popular categories higher. The exact mixture was measured and is not in
    the grid: on MovieLens, where genres are not what users choose by, it scored HR@10 0.047
    against 0.057 (docs/design.md, issue 11).

    >>> from datetime import datetime, UTC
    >>> from schemas.events import InteractionEvent, ItemText
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> def click(u, i, cat): return InteractionEvent(event_id=f"{u}{i}", user_id=u,
    ...     item_id=i, event_type="click", timestamp=t, item=ItemText(title=i, categories=[cat]))
    >>> counts = Counts(half_lives=[float("inf")])
    >>> jazz_fan = CategoryAffinity(counts, float("inf"), smoothing=0.5)
    >>> jazz_fan.learn([click("a", "sax", "jazz"), click("b", "tent", "camping"),
    ...                 click("c", "tent", "camping"), click("d", "trio", "jazz")])
    >>> jazz_fan.scores(["a", "new"], ["sax", "tent", "trio"]).round(3).tolist()
    [[0.75, 0.5, 0.75], [0.5, 1.0, 0.5]]
    """

    def __init__(
        self,
        counts: Counts,
        half_life: float,
        history: int = 50,
        decay: float = 0.9,
        smoothing: float = 0.1,
    ) -> None:
        super().__init__(counts)
        self.which = counts.half_lives.index(half_life)
        self.history, self.decay, self.smoothing = history, decay, smoothing
        self.name = (
            f"category affinity × popularity (half-life {half_life:g}, last {history},"
            f" smoothing {smoothing:g})"
        )

    def _scores(self, users: Sequence[str], cols: np.ndarray) -> np.ndarray:
        G = self.counts.category_matrix()  # [n, C]
        shares = np.zeros((len(users), G.shape[1]))  # [U, C]
        for row, user in enumerate(users):
            recent = self.counts.recent(user, self.history)
            shares[row] = self.decay ** np.arange(len(recent))[::-1] @ G[recent]
        a = self.smoothing
        affinity = (shares + a) / (shares.sum(1, keepdims=True) + a * G.shape[1])  # [U, C]
        pop = self.counts.popularity(self.which, cols)  # [n']
        return (affinity @ G[cols].T) * pop[None, :]  # type: ignore[no-any-return]


def half_life_grid(lo: float = 250.0, hi: float = 64_000.0) -> list[float]:
    """Half-lives doubling from ``lo`` to ``hi`` events, and no decay at all."""
    steps = int(math.log2(hi / lo))
    return [lo * 2**k for k in range(steps + 1)] + [math.inf]
