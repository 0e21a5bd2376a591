"""hyperrep: hyper-representations, embeddings of whole models learned from their weights alone."""
