"""Engine adapters: the scoring stage on Ray, the selection stage on Spark."""
