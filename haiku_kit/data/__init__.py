"""Data: reading users' files, the source loaders, topics for poems without one, the run's splits."""
