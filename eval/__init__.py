"""Evaluation: decoding, the metric, distributed evaluation, submissions and leaderboards."""
