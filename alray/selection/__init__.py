"""The selection core: pure NumPy rounds, partitions and ranking that every engine runs."""
