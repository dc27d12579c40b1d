"""Task datasets: the drop-folder contract (docs/architecture.md §3), validation, and the Split-WordNet-20 stream."""
