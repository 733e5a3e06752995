"""The HTTP ingestion service (``stream api``): Amplitude HTTP V2 / Batch and Segment's tracking API."""
