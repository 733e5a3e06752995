"""Identity and enrichment: amplitude_ids, merges, user and group properties (see ``stream.identity.device``)."""
