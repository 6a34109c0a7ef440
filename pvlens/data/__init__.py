"""Data the methods read: external labelled corpora, the capability benchmarks, and the shipped finetuning
datasets (with the code that builds them from their sources)."""
