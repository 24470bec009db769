"""Everything that moves data: consumer loop, micro-batcher, dead letters, producers,
checkpoints coupled with offsets, metrics and the ``lorastream`` CLI. Talks to learners
only through :class:`learners.base.Learner`."""
