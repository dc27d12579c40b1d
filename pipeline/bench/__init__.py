"""Benchmarks of the learning core on real data: methods × class orderings of Split-WordNet-20 and Split-FashionMNIST."""
