"""Speech data: sentence source, synthesis, acoustic conditions, caching and features."""
