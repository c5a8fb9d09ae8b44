"""The shard format both sides share: sample encoding, vocabulary, writer, manifest, statistics."""
