"""Task datasets: the drop-folder contract (design.md §3), validation, and the Split-WordNet-20 stream."""
